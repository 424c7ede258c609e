"""Union-find over indices 0..n-1 whose root is always the smallest index of its group (path halving)."""

from __future__ import annotations

import numpy as np


class UnionFind:
    def __init__(self, parent: list[int]):
        """`parent`: a forest to start from, list(range(n)) for n singletons; it is updated in place."""
        self.parent = parent

    def root(self, x: int) -> int:
        parent = self.parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.root(a), self.root(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def roots(self) -> np.ndarray:
        """[n] int64: the root (smallest index) of each index's group."""
        return np.array([self.root(i) for i in range(len(self.parent))], dtype=np.int64)
