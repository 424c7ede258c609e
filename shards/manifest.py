"""manifest.json of a shard set: what was selected, from which catalog, and every shard's checksum."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from catalog.errors import OrthoError
from catalog.files import atomic_write, is_remote, local_path

MANIFEST_VERSION = 1


class ManifestError(OrthoError, ValueError):
    """A manifest this version cannot read."""


@dataclass
class ShardEntry:
    file: str
    samples: int
    bytes: int
    sha256: str


@dataclass
class Manifest:
    name: str
    created: str
    query: str
    include_excluded: bool
    seed: int
    selection_sha256: str
    catalog_snapshot: dict
    samples: int
    bytes: int
    shards: list[ShardEntry]
    counts: dict = field(default_factory=dict)
    evaluation: bool = False
    resample: dict = field(default_factory=dict)  # {max_side, filter, images_reduced, min_factor}; {}: as stored
    codec: dict = field(default_factory=lambda: {"name": "png", "ext": "png"})  # shards/codecs.py; older sets: png
    balance: dict = field(default_factory=dict)  # shards/balance.py: {by, target, seed, counts, ...}; {}: as queried
    unreadable: dict = field(default_factory=dict)  # reason -> selected images left out: the store could not give them
    schema_version: int = MANIFEST_VERSION

    def write(self, path: Path) -> None:
        atomic_write(path, json.dumps(asdict(self), indent=2, sort_keys=False) + "\n")

    @classmethod
    def read(cls, path: str | os.PathLike) -> "Manifest":
        text = _read_text(str(path))
        d = json.loads(text)
        if d.get("schema_version") != MANIFEST_VERSION:
            raise ManifestError(f"manifest schema version {d.get('schema_version')} is not {MANIFEST_VERSION}")
        d["shards"] = [ShardEntry(**s) for s in d["shards"]]
        return cls(**d)


def _read_text(path: str) -> str:
    if is_remote(path):
        import fsspec

        with fsspec.open(path, "rt") as f:
            return f.read()
    return Path(local_path(path)).read_text()


def shard_urls(manifest_path: str, manifest: Manifest, base: str | None = None) -> list[str]:
    """Shard locations: beside the manifest (a local path or URL), or under `base` (a URL, or a
    `pipe:` command template with {} for the file name)."""
    if base is None:
        base = manifest_path.rsplit("/", 1)[0] if "/" in manifest_path else "."
    if "{}" in base:
        return [base.replace("{}", s.file) for s in manifest.shards]
    return [f"{base.rstrip('/')}/{s.file}" for s in manifest.shards]
