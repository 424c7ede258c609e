"""Near-duplicate search and grouping, in pass order: NeighbourSearch -> accepted pairs -> DupGroups (dup_graph),
then the crop search (curation/dedup/crop_match.py) over the pairs still apart.

Search is sub-quadratic: an inverted-file index (faiss IVF with 8-bit scalar-quantised lists,
inner product on unit vectors) probes the few cells nearest each query, so cost grows
~ N * (nlist + nprobe * N / nlist) with nlist ~ 4 sqrt(N), i.e. ~ N^1.5; candidates within a
small margin of the threshold are re-scored exactly.
Below `exact_below` images an exact blocked matrix product is used instead (and is the reference
the tests compare against, with tests/dedup_reference.py's all-pairs grouping). Each image is also queried with its mirror embedding, so a flipped
re-export is found; a flipped match is accepted only when laterality does not contradict it.
"""

from __future__ import annotations

import numpy as np

from curation.dedup.config import DedupConfig
from curation.dedup.groups import DupGroups
from curation.dedup.union_find import UnionFind


class NeighbourSearch:
    """Cosine range search over unit vectors: exact below `exact_below` items, else faiss IVF.
    Built once, queried with plain and mirrored embeddings. `index`: an IVF index over `emb` built
    before (an incremental curation's, curation/dedup/index.py); `emb` is then only read to re-score
    candidates and may be a float16 memory map. `trained`: the IVF index before anything was added."""

    def __init__(self, emb: np.ndarray, cfg: DedupConfig, index=None):
        self.index, self.trained = index, None
        if index is not None:
            self.emb = emb
            return
        self.emb = np.ascontiguousarray(emb, dtype=np.float32)
        if len(emb) >= cfg.exact_below:
            import faiss

            d = self.emb.shape[1]
            nlist = int(min(65536, max(64, 4 * np.sqrt(len(emb)))))
            # 8-bit scalar-quantised lists: 1.6x faster scans; candidates are re-scored exactly below
            self.index = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatIP(d), d, nlist, faiss.ScalarQuantizer.QT_8bit,
                                                       faiss.METRIC_INNER_PRODUCT)
            self.index.cp.niter = 10
            sample = np.random.default_rng(0).choice(len(emb), size=min(len(emb), 32 * nlist), replace=False)
            self.index.train(self.emb[np.sort(sample)])
            self.trained = faiss.clone_index(self.index)
            self.index.add(self.emb)
            self.index.nprobe = cfg.nprobe

    def range(self, queries: np.ndarray, threshold: float) -> list[tuple[int, int, float]]:
        """All (query i, item j, cosine) with cosine >= threshold, i != j."""
        out = []
        for qi, ji, sims in self.range_blocks(queries, threshold):
            out += list(zip(qi.tolist(), ji.tolist(), sims.tolist()))
        return out

    def range_blocks(self, queries: np.ndarray, threshold: float, first: int = 0):
        """The same pairs as arrays (query i, item j, cosine), one block of queries at a time, so that a
        caller folding them into groups never holds them all (a series of near-identical slices
        makes pairs quadratic in its length). Query i is item `first` + i (an incremental curation
        asks with its new images only): its match with itself is left out."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        return self._exact(q, threshold, first) if self.index is None else self._ivf(q, threshold, first)

    def _exact(self, q: np.ndarray, threshold: float, first: int, block: int = 1024):
        for start in range(0, len(q), block):
            sims = q[start : start + block] @ self.emb.T
            qi, ji = np.nonzero(sims >= threshold)
            keep = qi + start + first != ji
            qi, ji = qi[keep], ji[keep]
            yield qi + start, ji, sims[qi, ji].astype(np.float32)

    def _ivf(self, q: np.ndarray, threshold: float, first: int, margin: float = 0.03):
        for start in range(0, len(q), 65536):
            lims, _, labels = self.index.range_search(q[start : start + 65536], threshold - margin)
            rows = np.repeat(np.arange(len(lims) - 1) + start, np.diff(lims).astype(np.int64))
            keep = rows + first != labels
            rows, labels = rows[keep], labels[keep]
            sims = np.einsum("ij,ij->i", q[rows], np.asarray(self.emb[labels], np.float32))  # exact cosine
            ok = sims >= threshold
            yield rows[ok], labels[ok].astype(np.int64), sims[ok].astype(np.float32)


def accepted(qi: np.ndarray, ji: np.ndarray, sims: np.ndarray, series_code: np.ndarray, lat: np.ndarray,
             cfg: DedupConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Of found pairs (query qi, item ji, cosine): those that pass the threshold (the same-series one for
    slices of one series) and do not join a left and a right knee, as (a, b, cosine, kept) with a < b and
    `kept` the mask over the input."""
    a, b = np.minimum(qi, ji), np.maximum(qi, ji)
    same = (series_code[a] >= 0) & (series_code[a] == series_code[b])
    keep = sims >= np.where(same, cfg.same_series_threshold, cfg.threshold)
    keep &= ~((lat[a] > 0) & (lat[b] > 0) & (lat[a] != lat[b]))  # left and right knees of one person
    return a[keep], b[keep], sims[keep], keep


def fold_best(a: np.ndarray, b: np.ndarray, sims: np.ndarray, flipped: bool, best_other: np.ndarray,
              best_sim: np.ndarray, best_flip: np.ndarray) -> None:
    """Each endpoint of the pairs keeps its most similar match (ties: the lower index), in place; a mirrored match
    replaces a plain one only when strictly better."""
    for x, other in ((a, b), (b, a)):
        order = np.lexsort((other, -sims, x))
        first = np.r_[True, x[order][1:] != x[order][:-1]]
        xs, os_, ss = x[order][first], other[order][first], sims[order][first]
        better = (ss > best_sim[xs]) | ((ss == best_sim[xs]) & (os_ < best_other[xs]))
        best_sim[xs[better]], best_other[xs[better]] = ss[better], os_[better]
        best_flip[xs[better]] = flipped


def codes(laterality: list, series: list) -> tuple[np.ndarray, np.ndarray]:
    """(series code [N], -1 for none; laterality code [N], 0 unknown, 1 L, 2 R)."""
    known = {v: k for k, v in enumerate(dict.fromkeys(s for s in series if s is not None))}
    series_code = np.array([known[s] if s is not None else -1 for s in series], dtype=np.int64)
    return series_code, np.array([{"L": 1, "R": 2}.get(x, 0) for x in laterality], dtype=np.int8)


def dup_graph(emb: np.ndarray, emb_flip: np.ndarray, laterality: list, series: list, cfg: DedupConfig,
              search: NeighbourSearch | None = None) -> DupGroups:
    """The groups all accepted pairs would give (tests/dedup_reference.py), folded block by block: the same thresholds (the
    same-series one for slices of one series), laterality respected, union-find with the smallest
    index as root. `search`: a NeighbourSearch over `emb` built by the caller (which keeps its index)."""
    n = len(emb)
    forest = UnionFind(list(range(n)))
    best_other = np.full(n, -1, dtype=np.int64)
    best_sim = np.full(n, -np.inf, dtype=np.float32)
    best_flip = np.zeros(n, dtype=bool)
    pairs = 0
    if n == 0:
        return DupGroups(np.zeros(0, np.int64), best_other, best_sim, np.zeros(0, np.int8), np.zeros(0, np.int64))
    series_code, lat = codes(laterality, series)

    low = min(cfg.threshold, cfg.same_series_threshold)
    index = search or NeighbourSearch(emb, cfg)
    passes = [(False, emb)] + ([(True, emb_flip)] if cfg.use_flip else [])
    for flipped, queries in passes:
        for qi, ji, sims in index.range_blocks(queries, low):
            a, b, sims, keep = accepted(qi, ji, sims, series_code, lat, cfg)
            if not len(a):
                continue
            pairs += int(np.count_nonzero(qi[keep] < ji[keep])) if not flipped else len(a)
            fold_best(a, b, sims, flipped, best_other, best_sim, best_flip)
            for u, v in zip(a.tolist(), b.tolist()):
                forest.union(u, v)
    group = forest.roots()
    best_method = np.where(best_other >= 0, best_flip, -1).astype(np.int8)
    return DupGroups(group, best_other, best_sim, best_method, group.copy(), pairs, series_code, lat)
