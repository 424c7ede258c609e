"""What a shard set holds and how it is cut: the settings of `ortho shards build` and of a pipeline file's `shards:`
entries, with their defaults, written here once."""

from __future__ import annotations

from dataclasses import dataclass

from shards.codecs import DEFAULT_CODEC, get_codec
from shards.resample import DEFAULT_MAX_SIDE


@dataclass(frozen=True)
class ShardSetSpec:
    name: str
    query: str  # SQL returning image_id
    include_excluded: bool = False  # keep images curation excluded (quality, duplicates, leakage guard)
    evaluation: bool = False  # an evaluation set: keep held-out (val/test) images, still drop excluded ones
    seed: int = 0  # of the sample order (and of a balanced draw)
    target_size: str | None = "512MB"  # approximate bytes per shard
    samples_per_shard: int | None = None  # cut shards by sample count instead of size
    max_side: int | None = DEFAULT_MAX_SIDE  # reduce images whose longer side exceeds it; 0 or None: as stored
    codec: str = DEFAULT_CODEC  # payload codec (shards/codecs.py)
    balance: str | None = None  # draw `target` images evenly over clusters:LEVEL or a column of images
    target: int | None = None

    def __post_init__(self):
        get_codec(self.codec)  # an unknown codec: one line naming the choices, before anything is selected

    @property
    def balance_spec(self):
        """The balanced draw (shards/balance.py), or None."""
        from shards.balance import BalanceSpec  # duckdb and pyarrow: only for a build that balances

        return BalanceSpec(self.balance, self.target) if self.balance else None
