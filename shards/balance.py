"""Balanced selection for a shard set: draw `target` images evenly over groups instead of in the catalog's
proportions (Vo et al. 2024's hierarchical sampling).

    clusters:LEVEL   the hierarchical k-means of the latest clustered model (the `clusters` view): even over the
                     clusters of LEVEL, and inside each, even over its clusters one level finer, down to level 1
    COLUMN           a column of `images` (view, body_part, source, ...): even over its values

Each group gets an equal share; a group smaller than its share gives all it has and the rest goes to the others
(water-filling). Inside the finest group the images are a seeded random draw. The draw depends only on the
selection, the groups and the seed: the same inputs give the same images.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa

from catalog import db
from catalog.embeddings import latest_clustered
from catalog.errors import OrthoError
from catalog.workspace import Workspace

_COLUMN = re.compile(r"^[a-z_][a-z0-9_]*$")


class BalanceError(OrthoError, ValueError):
    pass


@dataclass(frozen=True)
class BalanceSpec:
    by: str  # "clusters:LEVEL" or a column of `images`
    target: int

    @property
    def level(self) -> int | None:
        if not self.by.startswith("clusters:"):
            return None
        try:
            return int(self.by.split(":", 1)[1])
        except ValueError:
            raise BalanceError(f"--balance {self.by}: give a cluster level, e.g. clusters:2") from None


def water_fill(sizes: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """How many to take from each group: equal shares, a small group's unused share spread over the others;
    ties between equal groups broken by the seeded order."""
    order = rng.permutation(len(sizes))
    order = order[np.argsort(sizes[order], kind="stable")]
    take = np.zeros(len(sizes), np.int64)
    left = min(int(n), int(sizes.sum()))
    for j, g in enumerate(order):
        take[g] = min(int(sizes[g]), left // (len(order) - j))
        left -= take[g]
    return take


def draw(paths: list[tuple], n: int, rng: np.random.Generator) -> list[int]:
    """Indices of n items, even over paths[i][0], then inside each even over paths[i][1], and so on."""
    if not paths:
        return []
    codes = [np.unique([str(p[d]) for p in paths], return_inverse=True)[1] for d in range(len(paths[0]))]
    return sorted(_draw(np.arange(len(paths)), codes, 0, n, rng))


def _draw(items: np.ndarray, codes: list[np.ndarray], depth: int, n: int, rng: np.random.Generator) -> list[int]:
    if n <= 0:
        return []
    if depth == len(codes):
        return [int(i) for i in rng.choice(items, size=min(n, len(items)), replace=False)]
    keys = codes[depth][items]
    order = np.argsort(keys, kind="stable")
    sizes = np.bincount(keys)[np.unique(keys)]
    groups = np.split(items[order], np.cumsum(sizes)[:-1])
    take = water_fill(sizes, n, rng)
    return [i for g, t in zip(groups, take) for i in _draw(g, codes, depth + 1, int(t), rng)]


def _cluster_paths(ws: Workspace, ids: list[str], level: int) -> tuple[dict[str, tuple], str]:
    """image id -> its clusters from `level` down to 1, and the model they come from."""
    model = latest_clustered(ws)
    if model is None:
        raise BalanceError("--balance clusters:LEVEL needs clusters: run `ortho embed` and `ortho cluster` first")
    with db.connection(ws, views=["clusters"]) as con:
        top = con.execute("SELECT max(level) FROM clusters WHERE model = ?", [model]).fetchall()[0][0]
        if not 1 <= level <= top:
            raise BalanceError(f"--balance clusters:{level}: model {model} has levels 1 to {top}")
        con.register("wanted", pa.table({"image_id": ids}))
        rows = con.execute("""SELECT image_id, list(cluster ORDER BY level DESC) FROM clusters
                              SEMI JOIN wanted USING (image_id) WHERE model = ? AND level <= ? GROUP BY image_id""",
                           [model, level]).fetchall()
    return {i: tuple(p) for i, p in rows}, model


def _column_paths(ws: Workspace, ids: list[str], column: str) -> dict[str, tuple]:
    if not _COLUMN.match(column):
        raise BalanceError(f"--balance {column!r}: give clusters:LEVEL or a column of images")
    with db.connection(ws) as con:
        con.register("wanted", pa.table({"image_id": ids}))
        try:
            rows = con.execute(f"SELECT image_id, CAST({column} AS VARCHAR) FROM images SEMI JOIN wanted USING "
                               "(image_id)").fetchall()
        except duckdb.Error:
            raise BalanceError(f"--balance {column}: images has no column {column!r}") from None
    return {i: (v if v is not None else "none",) for i, v in rows}


def balance(ws: Workspace, records: list[dict], spec: BalanceSpec, seed: int) -> tuple[list[dict], dict]:
    """(the drawn records, in their order, and what the manifest records of the draw)."""
    if spec.target < 1:
        raise BalanceError("--target must be a positive number of images")
    ids = [r["image_id"] for r in records]
    level, model = spec.level, None
    if level is not None:
        paths, model = _cluster_paths(ws, ids, level)
    else:
        paths = _column_paths(ws, ids, spec.by)
    placed = [r for r in records if r["image_id"] in paths]
    chosen = draw([paths[r["image_id"]] for r in placed], spec.target, np.random.default_rng(seed))
    picked = [placed[i] for i in chosen]
    if not picked:
        raise BalanceError(f"--balance {spec.by}: none of the selected images has "
                           + ("a cluster (embed and cluster them first)" if level is not None else "a value"))
    per_group = Counter(str(paths[r["image_id"]][0]) for r in picked)
    available = Counter(str(p[0]) for p in (paths[r["image_id"]] for r in placed))
    summary = {"by": spec.by, "target": spec.target, "seed": seed, "selected": len(picked),
               "available": len(placed), "groups": len(available),
               "counts": dict(sorted(per_group.items(), key=lambda kv: kv[0])),
               "available_counts": dict(sorted(available.items(), key=lambda kv: kv[0]))}
    if model:
        summary |= {"model": model, "level": level, "unclustered": len(records) - len(placed)}
    return picked, summary
