"""The near-duplicate searches' state between curations, what an incremental curation queries new images
against and extends (curation/dedup/incremental.py):

    catalog/curation-index/
      MANIFEST.json                  the current state: counts, settings, search modes, file names; replaced last
      <build>/                       one per full run (the run's id)
        ids emb flip lat series shape nkp     per image, in state order (a full run's: image id order; then
                                              each run's new images appended in id order)
        desc kp                               per keypoint, image after image (nkp rows each)
        graph-<run>.npz                       groups and each image's recorded best match, rewritten by every run
        pca.npz, <search>-empty.faiss         the IVF searches' training (global, flip, crops), once per build
        <search>-base-<v>.faiss               what a full run (or a merge) added, memory-mapped read-only
        <search>-delta-<run>.faiss            what later runs added, rewritten by each

Kill-safe: the arrays are append-only and read up to the manifest's counts (a killed run's tail is truncated
before the next appends), everything rewritten gets a new name, MANIFEST.json is replaced atomically once
everything it names is written, and files it does not name are deleted after. A killed run leaves the old state
or the new one; a state that is missing, unreadable or shorter than its manifest makes the next curation a full
run (CurationIndex.current says why).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np

from catalog.errors import BrokenInvariant
from catalog.files import atomic_write, fsync_dir
from catalog.ids import token
from catalog.workspace import Workspace
from curation.dedup.config import DedupConfig
from curation.dedup.descriptor_votes import pca_projected
from curation.dedup.groups import SAVED, DupGroups
from curation.dedup.keypoints import DESC, FEATURES_VERSION
from curation.dedup.signatures import DIM, PROJECTION_SEED, SIGNATURE_VERSION

log = logging.getLogger("ortho.curate")

FORMAT = 1
SEARCHES = ("global", "flip", "crops")
# name -> (dtype, row shape); the ids' dtype is S<id_bytes> from the manifest
PER_IMAGE = {"ids": (None, ()), "emb": (np.float16, (DIM,)), "flip": (np.float16, (DIM,)), "lat": (np.int8, ()),
             "series": (np.int64, ()), "shape": (np.int32, (2,)), "nkp": (np.int16, ())}
PER_KEYPOINT = {"desc": (np.uint8, (DESC,)), "kp": (np.float32, (4,))}


def index_dir(ws: Workspace) -> Path:
    return ws.dedup_index_dir


def recorded_settings(cfg: DedupConfig) -> dict:
    """What the state depends on: every dedup setting but the crop checks' thread count, and the versions of the
    signatures and keypoints it was built from. Any change forces a full run."""
    settings = dataclasses.asdict(cfg)
    settings["crops"].pop("workers", None)
    return json.loads(json.dumps({"dedup": settings, "features_version": FEATURES_VERSION,
                                  "signature": {"dim": DIM, "projection_seed": PROJECTION_SEED,
                                                "version": SIGNATURE_VERSION}}))


class LayeredIndex:
    """A faiss IVF index in two layers that answer as one index holding both would: a base (what a full run or a
    merge added, memory-mapped read-only) and a delta (what later runs added, in memory). Both share one trained
    quantizer, so a query probes the same lists in each; k-nearest results are merged by distance, range results
    joined. Labels number the base's rows first."""

    def __init__(self, base, delta):
        self.base, self.delta = base, delta
        self.metric_l2 = delta.metric_type == 1  # faiss.METRIC_L2; else inner product

    @property
    def ntotal(self) -> int:
        return self.base.ntotal + self.delta.ntotal

    def add(self, x: np.ndarray) -> None:
        self.delta.add(x)

    def search(self, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        db, ib = self.base.search(x, k)
        dd, id_ = self.delta.search(x, k)
        id_ = np.where(id_ >= 0, id_ + self.base.ntotal, -1)
        d, i = np.hstack([db, dd]), np.hstack([ib, id_])
        key = np.where(i >= 0, d if self.metric_l2 else -d, np.inf)  # missing neighbours last
        order = np.argsort(key, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(d, order, 1), np.take_along_axis(i, order, 1)

    def range_search(self, x: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        parts = []
        for layer, offset in ((self.base, 0), (self.delta, self.base.ntotal)):
            if layer.ntotal:
                lims, d, i = layer.range_search(x, radius)
                parts.append((np.repeat(np.arange(len(x)), np.diff(lims).astype(np.int64)), d, i + offset))
        if not parts:
            return np.zeros(len(x) + 1, np.int64), np.zeros(0, np.float32), np.zeros(0, np.int64)
        rows = np.concatenate([p[0] for p in parts])
        order = np.argsort(rows, kind="stable")
        lims = np.r_[0, np.cumsum(np.bincount(rows, minlength=len(x)))]
        return lims, np.concatenate([p[1] for p in parts])[order], np.concatenate([p[2] for p in parts])[order]


class CurationIndex:
    """The current state (read-only views of its arrays, up to the manifest's counts)."""

    def __init__(self, ws: Workspace, manifest: dict):
        self.ws, self.manifest = ws, manifest
        self.dir = index_dir(ws) / manifest["build"]

    @classmethod
    def current(cls, ws: Workspace) -> tuple["CurationIndex | None", str]:
        """(the state, "") or (None, why not: no_index, index_unreadable, index_inconsistent)."""
        path = index_dir(ws) / "MANIFEST.json"
        try:
            manifest = json.loads(path.read_text())
        except FileNotFoundError:
            return None, "no_index"
        except (OSError, ValueError):
            return None, "index_unreadable"
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            return None, "index_unreadable"
        state = cls(ws, manifest)
        return (state, "") if state._complete() else (None, "index_inconsistent")

    def _complete(self) -> bool:
        try:
            names = list(PER_IMAGE) + (list(PER_KEYPOINT) if self.manifest["crops"] else [])
            for name in names:
                if (self.dir / name).stat().st_size < self._rows(name) * self._row_bytes(name):
                    return False
            files = [self.manifest["graph"]] + [f for s in self.manifest["faiss"].values()
                                                for f in (s["empty"], s["base"], s["delta"]) if f]
            files += [self.manifest["pca"]] if self.manifest.get("pca") else []
            return all((self.dir / f).is_file() for f in files)
        except (KeyError, TypeError, OSError):
            return False

    @property
    def images(self) -> int:
        return int(self.manifest["images"])

    @property
    def keypoints(self) -> int:
        return int(self.manifest["keypoints"])

    def _rows(self, name: str) -> int:
        return self.images if name in PER_IMAGE else self.keypoints

    def _dtype(self, name: str) -> np.dtype:
        dtype, _ = PER_IMAGE.get(name) or PER_KEYPOINT[name]
        return np.dtype(f"S{self.manifest['id_bytes']}") if name == "ids" else np.dtype(dtype)

    def _row_bytes(self, name: str) -> int:
        _, shape = PER_IMAGE.get(name) or PER_KEYPOINT[name]
        return self._dtype(name).itemsize * int(np.prod(shape, dtype=np.int64))

    def array(self, name: str, rows: int | None = None) -> np.ndarray:
        """The first `rows` (default: the manifest's count) rows of an append-only array, memory-mapped."""
        rows = self._rows(name) if rows is None else rows
        _, shape = PER_IMAGE.get(name) or PER_KEYPOINT[name]
        if rows == 0:
            return np.zeros((0, *shape), self._dtype(name))
        return np.memmap(self.dir / name, dtype=self._dtype(name), mode="r", shape=(rows, *shape))

    def groups(self, **known) -> DupGroups:
        """The saved groups (DupGroups' other fields from `known`)."""
        with np.load(self.dir / self.manifest["graph"]) as z:
            out = {name: z[name].copy() for name in SAVED}
        if any(len(v) != self.images for v in out.values()):
            raise BrokenInvariant("the saved groups do not cover the saved images")
        return DupGroups.saved(out, **known)

    def searcher(self, search: str) -> LayeredIndex:
        import faiss

        spec = self.manifest["faiss"][search]
        base = faiss.read_index(str(self.dir / spec["base"]), faiss.IO_FLAG_MMAP)  # never added to
        delta = faiss.read_index(str(self.dir / (spec["delta"] or spec["empty"])))
        return LayeredIndex(base, delta)

    def projection(self):
        """The crop search's PCA projection (descriptor_votes.pca_projected with its saved mean and basis)."""
        import functools

        with np.load(self.dir / self.manifest["pca"]) as z:
            return functools.partial(pca_projected, mean=z["mean"].copy(), basis=z["basis"].copy())


class IndexWriter:
    """Writes the next state: a new build (a full run) or the current one extended (an incremental run), then
    `commit` publishes it. Nothing is visible before the commit."""

    def __init__(self, ws: Workspace, manifest: dict, fresh: bool):
        self.ws, self.manifest, self.fresh = ws, manifest, fresh
        self.dir = index_dir(ws) / manifest["build"]
        self.files: dict[str, str] = {}

    @classmethod
    def new_build(cls, ws: Workspace, run_id: str, settings: dict, crops_enabled: bool, id_bytes: int) -> "IndexWriter":
        root = index_dir(ws)
        root.mkdir(parents=True, exist_ok=True)
        build = f"{run_id}-{token(3)}"
        _sweep(root, keep=_current_build(root))  # a killed build's leftovers
        (root / build).mkdir()
        for name in list(PER_IMAGE) + (list(PER_KEYPOINT) if crops_enabled else []):
            (root / build / name).touch()
        manifest = {"format": FORMAT, "build": build, "version": run_id, "settings": settings, "crops": crops_enabled,
                    "id_bytes": id_bytes, "images": 0, "keypoints": 0, "graph": None, "pca": None,
                    "modes": {}, "trained": {}, "faiss": {}}
        return cls(ws, manifest, fresh=True)

    @classmethod
    def extending(cls, state: CurationIndex, run_id: str) -> "IndexWriter":
        manifest = json.loads(json.dumps(state.manifest))
        manifest["version"] = run_id
        writer = cls(state.ws, manifest, fresh=False)
        for name in list(PER_IMAGE) + (list(PER_KEYPOINT) if manifest["crops"] else []):
            path = writer.dir / name
            keep = state._rows(name) * state._row_bytes(name)
            if path.stat().st_size > keep:
                os.truncate(path, keep)  # a killed run's appended tail
        return writer

    @property
    def state(self) -> CurationIndex:
        """A view of what is written so far (arrays up to the appended counts)."""
        return CurationIndex(self.ws, self.manifest)

    def append(self, arrays: dict[str, np.ndarray], count: str = "images") -> None:
        """New rows at the end of the arrays: per image (`count` "images": every PER_IMAGE array) or per keypoint
        ("keypoints": every PER_KEYPOINT array, the crop search on), in state order."""
        view = self.state
        for name, values in arrays.items():
            values = np.ascontiguousarray(values, dtype=view._dtype(name))
            with open(self.dir / name, "r+b") as f:
                f.seek(self.manifest[count] * view._row_bytes(name))
                f.write(memoryview(values.reshape(-1).view(np.uint8)))
            fsync_dir(self.dir / name)
        self.manifest[count] += len(next(iter(arrays.values())))

    def reserve(self, rows: int, count: str = "keypoints") -> dict[str, np.ndarray]:
        """`rows` new rows at the end of the arrays, as writable memory maps to fill (before the commit)."""
        view, out = self.state, {}
        names = PER_KEYPOINT if count == "keypoints" else PER_IMAGE
        for name in names:
            start = self.manifest[count] * view._row_bytes(name)
            os.truncate(self.dir / name, start + rows * view._row_bytes(name))
            _, shape = names[name]
            out[name] = np.memmap(self.dir / name, dtype=view._dtype(name), mode="r+", offset=start,
                                  shape=(rows, *shape)) if rows else np.zeros((0, *shape), view._dtype(name))
        self.manifest[count] += rows
        return out

    def groups(self, groups: DupGroups) -> None:
        name = f"graph-{self.manifest['version']}.npz"
        with self._written(name) as tmp, open(tmp, "wb") as f:
            np.savez(f, **groups.arrays())
        self.manifest["graph"] = name

    def pca(self, project) -> None:
        with self._written("pca.npz") as tmp, open(tmp, "wb") as f:
            np.savez(f, mean=project.keywords["mean"], basis=project.keywords["basis"])
        self.manifest["pca"] = "pca.npz"

    def faiss(self, search: str, role: str, index) -> None:
        """Writes `index` as the search's `role`: empty (trained, once per build), base or delta."""
        import faiss

        name = f"{search}-{role}.faiss" if role == "empty" else f"{search}-{role}-{self.manifest['version']}.faiss"
        with self._written(name) as tmp:
            faiss.write_index(index, str(tmp))
        spec = self.manifest["faiss"].setdefault(search, {"empty": None, "base": None, "base_rows": 0, "delta": None})
        spec[role] = name
        if role == "base":
            spec["base_rows"], spec["delta"] = int(index.ntotal), None

    def no_delta(self, search: str) -> None:
        self.manifest["faiss"][search]["delta"] = None

    @contextlib.contextmanager
    def _written(self, name: str):
        tmp = self.dir / f".{name}.{token()}.tmp"
        try:
            yield tmp
            fsync_dir(tmp)
            os.replace(tmp, self.dir / name)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise

    def commit(self) -> None:
        """Publishes the state (the manifest, atomically), then deletes what it no longer names."""
        for name in list(PER_IMAGE) + (list(PER_KEYPOINT) if self.manifest["crops"] else []):
            fsync_dir(self.dir / name)  # rows filled through memory maps too
        fsync_dir(self.dir)
        root = index_dir(self.ws)
        atomic_write(root / "MANIFEST.json", json.dumps(self.manifest, indent=1, sort_keys=True), self.ws.staging_dir)
        _sweep(root, keep=self.manifest["build"])
        named = {self.manifest["graph"], self.manifest["pca"], *PER_IMAGE, *PER_KEYPOINT}
        named |= {f for s in self.manifest["faiss"].values() for f in (s["empty"], s["base"], s["delta"]) if f}
        for path in self.dir.iterdir():
            if path.name not in named:
                path.unlink(missing_ok=True)


def _current_build(root: Path) -> str | None:
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        return json.loads((root / "MANIFEST.json").read_text())["build"]
    return None


def _sweep(root: Path, keep: str | None) -> None:
    for path in root.iterdir():
        if path.is_dir() and path.name != keep:
            shutil.rmtree(path, ignore_errors=True)


def clear(ws: Workspace) -> None:
    """Removes the state (the manifest first): the next curation is a full run."""
    root = index_dir(ws)
    with contextlib.suppress(FileNotFoundError):
        (root / "MANIFEST.json").unlink()
    if root.exists():
        _sweep(root, keep=None)
