"""The outcome of the near-duplicate search, one type whatever made it (a full run, an incremental run, the saved
state) and whatever reads it (the next run, the crop search, the dup_groups rows): per image, in the search's
order, its group and its recorded best match. O(images) memory, whatever the number of matching pairs.

Each image's recorded match follows one rule whatever the order the pairs arrive in: a global match (most similar,
ties by the other's image id, plain before mirrored) over a crop match, a plain crop over a mirrored one, each the
most similar (ties by the pair's image ids); a new pair replaces an image's match only where a full run would have
chosen it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from curation.dedup.union_find import UnionFind

METHODS = ("embedding", "embedding_flip", "crop", "crop_flip")  # evidence recorded with each image's best match
GLOBAL, CROP, CROP_FLIP, NONE = 0, 1, 2, 3  # classes of a recorded match, in the order they are preferred
SAVED = ("group", "global_group", "best_other", "best_sim", "best_method")  # what the saved state keeps (index.py)


@dataclass
class DupGroups:
    group: np.ndarray  # [N] int64: the smallest position in each image's group
    best_other: np.ndarray  # [N] int64: the most similar match (-1: none)
    best_sim: np.ndarray  # [N] float32 (-inf: none)
    best_method: np.ndarray  # [N] int8: index into METHODS of that match's evidence (-1: none)
    # [N] the groups of the global signature's pairs alone: the crop search skips pairs these already join
    global_group: np.ndarray | None = None
    pairs: int = 0  # accepted global pairs, counted per search pass
    series_code: np.ndarray | None = None  # [N] -1: no series
    laterality_code: np.ndarray | None = None  # [N] 0 unknown, 1 L, 2 R
    ids: np.ndarray | None = None  # [N] S<bytes> image ids, where known

    @classmethod
    def saved(cls, arrays: dict[str, np.ndarray], **known) -> "DupGroups":
        return cls(**{name: arrays[name] for name in SAVED}, **known)

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in SAVED}

    def extended(self, n: int) -> None:
        """Images up to `n` appended, each alone and without a match."""
        old = len(self.group)
        for name, fill in (("group", None), ("global_group", None), ("best_other", -1), ("best_sim", -np.inf),
                           ("best_method", -1)):
            value = getattr(self, name)
            extra = np.arange(old, n) if fill is None else np.full(n - old, fill)
            setattr(self, name, np.concatenate([value, extra.astype(value.dtype)]))

    def apart_from_crop(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Candidate pairs (arrays) the crop search need not check: already one group by the global signature,
        slices of one series (the global pass owns those, with its strict same-series threshold), or left against
        right (a crop does not mirror)."""
        group = self.group if self.global_group is None else self.global_group
        skip = group[a] == group[b]
        if self.series_code is not None:
            skip |= (self.series_code[a] >= 0) & (self.series_code[a] == self.series_code[b])
        if self.laterality_code is not None:
            la, lb = self.laterality_code[a], self.laterality_code[b]
            skip |= (la > 0) & (lb > 0) & (la != lb)
        return skip

    def add_crop_edges(self, edges: list) -> None:
        """A full run's verified crop pairs (crop_match.CropEdge, in the search's order) join the groups: plain ones
        first, then mirrored ones (recorded as crop_flip)."""
        for method, mirrored in (("crop", False), ("crop_flip", True)):
            self.add_edges([(e.a, e.b, e.similarity) for e in edges if e.mirrored == mirrored], METHODS.index(method))

    def add_edges(self, edges: list[tuple[int, int, float]], method: int) -> None:
        """Joins the groups of each (a, b, similarity); an image with no match yet records the most similar of these
        (the similarity scales of two methods are not comparable, so a match the global signature found is kept)."""
        forest = UnionFind(self.group.tolist())
        for a, b, _ in edges:
            forest.union(a, b)
        self.group = forest.roots()
        had = self.best_other >= 0
        for a, b, sim in sorted(edges, key=lambda e: (-e[2], e[0], e[1])):
            for x, other in ((a, b), (b, a)):
                if not had[x] and self.best_other[x] < 0:
                    self.best_other[x], self.best_sim[x], self.best_method[x] = other, sim, method
            self.pairs += 1

    def fold_global(self, a: np.ndarray, b: np.ndarray, sims: np.ndarray, flipped: np.ndarray,
                    rank: np.ndarray) -> None:
        """An incremental run's new global pairs (a < b, positions; `rank`: each position's rank in id order) into
        the groups and the recorded matches."""
        if not len(a):
            return
        self.group = merged_groups(self.group, a, b)
        self.global_group = merged_groups(self.global_group, a, b)
        x, other = np.r_[a, b], np.r_[b, a]
        s, f = np.r_[sims, sims].astype(np.float32), np.r_[flipped, flipped].astype(np.int8)
        key = (-s, rank[other], f)  # the full run's order: most similar, lower id, plain before mirrored
        self._replace_best(x, other, s, np.where(f == 1, 1, 0), key, GLOBAL, rank)

    def fold_crop(self, ra: np.ndarray, rb: np.ndarray, sims: np.ndarray, mirrored: bool, order: np.ndarray,
                  rank: np.ndarray) -> None:
        """An incremental run's verified crop pairs, of one kind (plain or mirrored), given by rank in id order
        (`order`: the position of each rank)."""
        if not len(ra):
            return
        a, b = order[ra], order[rb]
        self.group = merged_groups(self.group, a, b)
        x, other = np.r_[a, b], np.r_[b, a]
        key = (np.r_[-sims, -sims], np.r_[ra, ra], np.r_[rb, rb])  # add_edges' order: most similar, then the pair
        method = METHODS.index("crop_flip" if mirrored else "crop")
        self._replace_best(x, other, np.r_[sims, sims], np.full(len(x), method), key,
                           CROP_FLIP if mirrored else CROP, rank)

    def _replace_best(self, x: np.ndarray, other: np.ndarray, sims: np.ndarray, method: np.ndarray, key: tuple,
                      cls: int, rank: np.ndarray) -> None:
        """Each x's best candidate (the smallest `key`) replaces its recorded match where a full run would prefer
        it: a recorded match of a later class (GLOBAL < CROP < CROP_FLIP < NONE), or one of this class with a larger
        key."""
        order = np.lexsort(tuple(reversed(key)) + (x,))
        order = order[np.r_[True, x[order][1:] != x[order][:-1]]]
        x, other, sims, method = x[order], other[order], sims[order], method[order]
        cand = tuple(k[order] for k in key)
        prev_cls = self._classes(x)
        better = prev_cls > cls
        same = prev_cls == cls
        if same.any():
            better |= same & _less(cand, self._stored_key(x, cls, rank))
        x, other, sims, method = x[better], other[better], sims[better], method[better]
        self.best_other[x], self.best_sim[x] = other, sims
        self.best_method[x] = method

    def _classes(self, x: np.ndarray) -> np.ndarray:
        method = self.best_method[x]
        cls = np.select([method <= 1, method == METHODS.index("crop")], [GLOBAL, CROP], CROP_FLIP)
        return np.where(self.best_other[x] < 0, NONE, cls)

    def _stored_key(self, x: np.ndarray, cls: int, rank: np.ndarray) -> tuple:
        other = np.maximum(self.best_other[x], 0)
        s = self.best_sim[x].astype(np.float32)
        if cls == GLOBAL:
            return -s, rank[other], (self.best_method[x] == 1).astype(np.int8)
        return -s, np.minimum(rank[x], rank[other]), np.maximum(rank[x], rank[other])

    def rows(self, con) -> list[dict]:
        """dup_groups rows for every image in a group of two or more. Representative: highest bit depth, then most
        pixels, then earliest source, then id; the group is named by its smallest image id."""
        if self.ids is None or not len(self.ids):
            return []
        size = np.bincount(self.group, minlength=len(self.ids))
        grouped = np.flatnonzero(size[self.group] >= 2)
        if not len(grouped):
            return []
        ids = self.ids.astype(str)
        con.register("grouped_ids", pa.table({"image_id": pa.array(ids[grouped])}))
        meta = {r[0]: r[1:] for r in con.execute("""SELECT image_id, bits, rows * cols, source_seq FROM images
                                                     SEMI JOIN grouped_ids USING (image_id)""").fetchall()}
        con.unregister("grouped_ids")
        members: dict[int, list[int]] = {}
        for i in grouped.tolist():
            members.setdefault(int(self.group[i]), []).append(i)
        out = []
        for idx in members.values():
            rep = min(idx, key=lambda i: (-meta[ids[i]][0], -meta[ids[i]][1], meta[ids[i]][2], ids[i]))
            name = min(ids[i] for i in idx)
            for i in idx:
                out.append({"image_id": ids[i], "dup_group": name, "representative": i == rep, "group_size": len(idx),
                            "matched_image_id": ids[int(self.best_other[i])],
                            "method": METHODS[int(self.best_method[i])], "similarity": float(self.best_sim[i])})
        return sorted(out, key=lambda r: (r["dup_group"], r["image_id"]))


def merged_groups(group: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`group` (each image's smallest member position) with the groups of each pair (a, b) joined."""
    labels, inv = np.unique(np.r_[group[a], group[b]], return_inverse=True)
    forest = UnionFind(list(range(len(labels))))
    for u, v in zip(inv[: len(a)].tolist(), inv[len(a) :].tolist()):
        forest.union(u, v)
    roots = labels[forest.roots()]  # labels are sorted: a root is its group's smallest label
    pos = np.searchsorted(labels, group)
    hit = pos < len(labels)
    hit[hit] = labels[pos[hit]] == group[hit]
    out = group.copy()
    out[hit] = roots[pos[hit]]
    return out


def _less(a: tuple, b: tuple) -> np.ndarray:
    """Element-wise lexicographic a < b over tuples of arrays."""
    out = np.zeros(len(a[0]), bool)
    tied = np.ones(len(a[0]), bool)
    for u, v in zip(a, b):
        out |= tied & (u < v)
        tied &= u == v
    return out
