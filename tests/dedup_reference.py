"""The near-duplicate search as all pairs, then union-find: what curation/dedup/search.py's streamed dup_graph
must equal (tests/curation/test_curation.py) and what bench/dedup.py measures recall with."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from curation.dedup.config import DedupConfig
from curation.dedup.search import NeighbourSearch
from curation.dedup.union_find import UnionFind


@dataclass(frozen=True)
class Edge:
    a: int
    b: int
    similarity: float
    method: str  # embedding | embedding_flip


def search(emb: np.ndarray, queries: np.ndarray, threshold: float, cfg: DedupConfig) -> list[tuple[int, int, float]]:
    if len(emb) == 0:
        return []
    return NeighbourSearch(emb, cfg).range(queries, threshold)


def find_edges(emb: np.ndarray, emb_flip: np.ndarray, laterality: list, series: list, cfg: DedupConfig) -> list[Edge]:
    low = min(cfg.threshold, cfg.same_series_threshold)
    found: dict[tuple[int, int], Edge] = {}
    if len(emb) == 0:
        return []
    index = NeighbourSearch(emb, cfg)
    passes = [("embedding", emb)] + ([("embedding_flip", emb_flip)] if cfg.use_flip else [])
    for method, queries in passes:
        for i, j, sim in index.range(queries, low):
            a, b = min(i, j), max(i, j)
            same_series = series[a] is not None and series[a] == series[b]
            if sim < (cfg.same_series_threshold if same_series else cfg.threshold):
                continue
            la, lb = laterality[a], laterality[b]
            if la in ("L", "R") and lb in ("L", "R") and la != lb:
                continue  # left and right knees of one person: mirror images, different knees
            prev = found.get((a, b))
            if prev is None or sim > prev.similarity:
                found[(a, b)] = Edge(a, b, sim, method)
    return sorted(found.values(), key=lambda e: (e.a, e.b))


def groups(n: int, edges: list[Edge]) -> np.ndarray:
    """Union-find: the group of each index, as the smallest index in its group."""
    forest = UnionFind(list(range(n)))
    for e in edges:
        forest.union(e.a, e.b)
    return forest.roots()
