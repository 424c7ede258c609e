"""Semantic deduplication (SemDeDup, Abbas et al. 2023) as a quality reason: within each level-1 cluster of a model's
embeddings, an image whose cosine similarity to an earlier member (image id order) reaches `threshold` is a
`semantic_duplicate`; the first of each tight group stays. Off by default (`semdedup.enabled=true`), and it needs
`ortho embed` (and, past `max_unclustered` images, `ortho cluster`) first.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pyarrow.parquet as pq

from catalog import embeddings as emb
from catalog.workspace import Workspace

log = logging.getLogger("ortho.curate")
REASON = "semantic_duplicate"


@dataclass(frozen=True)
class SemDedupConfig:
    enabled: bool = False
    model: str = ""  # model key [default: the most recently embedded]
    threshold: float = 0.95  # cosine similarity
    exclude: bool = True  # excluded from training selections, or a flag only
    max_unclustered: int = 20000  # without clusters, the whole catalog is one group up to this many images
    block: int = 2048  # rows per similarity block: memory is block x cluster size


def duplicates_within(x: np.ndarray, threshold: float, block: int = SemDedupConfig.block) -> np.ndarray:
    """x [n, d] unit rows in keep order -> bool [n]: similar to an earlier row at `threshold` or more."""
    n = len(x)
    dup = np.zeros(n, bool)
    for s in range(0, n, block):
        rows = np.arange(s, min(s + block, n))
        sims = np.where(np.arange(n)[None, :] < rows[:, None], x[rows] @ x.T, -np.inf)  # [b, n]: earlier rows only
        dup[rows] = sims.max(axis=1) >= threshold
    return dup


def semantic_duplicates(ws: Workspace, cfg: SemDedupConfig, current: set[str]) -> list[str]:
    """Image ids (of `current`, the catalog's images) that SemDeDup drops."""
    info = emb.resolve_model(ws, cfg.model or None)
    ids, x = emb.load_vectors(ws, info.model)
    keep = np.array([i in current for i in ids], bool)
    ids = [i for i, k in zip(ids, keep) if k]
    x = emb.normalised(x[keep])
    groups = _level1(ws, info.model, ids)
    if groups is None:
        if len(ids) > cfg.max_unclustered:
            log.warning("semdedup: %d images and no clusters of model %s: run `ortho cluster` first; skipped",
                        len(ids), info.model)
            return []
        groups = np.zeros(len(ids), np.int64)
    out: list[str] = []
    for g in np.unique(groups):
        members = np.flatnonzero(groups == g)
        members = members[np.argsort([ids[m] for m in members], kind="stable")]
        dup = duplicates_within(x[members], cfg.threshold, cfg.block)
        out += [ids[m] for m in members[dup]]
    return sorted(out)


def _level1(ws: Workspace, model: str, ids: list[str]) -> np.ndarray | None:
    """Each id's level-1 cluster, -1 for an image clustered after; None without a clustering."""
    path = emb.clusters_path(ws, model)
    if not path.is_file():
        return None
    t = pq.read_table(path, columns=["image_id", "level", "cluster"], filters=[("level", "=", 1)])
    of = dict(zip(t["image_id"].to_pylist(), t["cluster"].to_pylist()))
    return np.array([of.get(i, -1) for i in ids], np.int64)


def quality_rows(ws: Workspace, cfg: SemDedupConfig, con) -> list[dict]:
    """The `quality` rows of SemDeDup (none when disabled) over the images of the catalog connection `con`."""
    if not cfg.enabled:
        return []
    current = {r[0] for r in con.execute("SELECT image_id FROM images").fetchall()}
    return [{"image_id": i, "reason": REASON, "excluding": cfg.exclude}
            for i in semantic_duplicates(ws, cfg, current)]
