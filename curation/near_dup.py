"""Near-duplicate search and grouping, in pass order: NeighbourSearch -> EdgeFilter -> DupGroups.

Search is sub-quadratic: an inverted-file index (faiss IVF, inner product on unit vectors) probes
the few cells nearest each query, so cost grows ~ N * nprobe * N / nlist with nlist ~ 4 sqrt(N).
Below `exact_below` images an exact blocked matrix product is used instead (and is the reference
the tests compare against). Each image is also queried with its mirror embedding, so a flipped
re-export is found; a flipped match is accepted only when laterality does not contradict it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DedupConfig:
    threshold: float = 0.66  # cosine; see curation/signatures.py for the measured separation
    same_series_threshold: float = 0.97  # neighbouring MRI slices are alike; only near-identical ones group
    use_flip: bool = True
    exact_below: int = 50_000
    nprobe: int = 16


@dataclass(frozen=True)
class Edge:
    a: int
    b: int
    similarity: float
    method: str  # embedding | embedding_flip


def search(emb: np.ndarray, queries: np.ndarray, threshold: float, cfg: DedupConfig) -> list[tuple[int, int, float]]:
    """All (query i, item j, cosine) with cosine >= threshold, i != j."""
    n = len(emb)
    if n == 0:
        return []
    if n < cfg.exact_below:
        return _exact(emb, queries, threshold)
    return _ivf(emb, queries, threshold, cfg.nprobe)


def _exact(emb: np.ndarray, queries: np.ndarray, threshold: float, block: int = 2048) -> list[tuple[int, int, float]]:
    e = emb.astype(np.float32)
    out = []
    for start in range(0, len(queries), block):
        sims = queries[start : start + block].astype(np.float32) @ e.T
        qi, ji = np.nonzero(sims >= threshold)
        out += [(int(q + start), int(j), float(sims[q, j])) for q, j in zip(qi, ji) if q + start != j]
    return out


def _ivf(emb: np.ndarray, queries: np.ndarray, threshold: float, nprobe: int) -> list[tuple[int, int, float]]:
    import faiss

    e = np.ascontiguousarray(emb, dtype=np.float32)
    q = np.ascontiguousarray(queries, dtype=np.float32)
    d = e.shape[1]
    nlist = int(min(65536, max(64, 4 * np.sqrt(len(e)))))
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    train = e[np.random.default_rng(0).choice(len(e), size=min(len(e), 64 * nlist), replace=False)]
    index.train(train)
    index.add(e)
    index.nprobe = nprobe
    out = []
    for start in range(0, len(q), 65536):
        lims, dist, labels = index.range_search(q[start : start + 65536], threshold)
        for i in range(len(lims) - 1):
            for k in range(lims[i], lims[i + 1]):
                j = int(labels[k])
                if j != start + i:
                    out.append((start + i, j, float(dist[k])))
    return out


def find_edges(emb: np.ndarray, emb_flip: np.ndarray, laterality: list, series: list, cfg: DedupConfig) -> list[Edge]:
    low = min(cfg.threshold, cfg.same_series_threshold)
    found: dict[tuple[int, int], Edge] = {}
    passes = [("embedding", emb)] + ([("embedding_flip", emb_flip)] if cfg.use_flip else [])
    for method, queries in passes:
        for i, j, sim in search(emb, queries, low, cfg):
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
    parent = np.arange(n)

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for e in edges:
        ra, rb = root(e.a), root(e.b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([root(i) for i in range(n)])
