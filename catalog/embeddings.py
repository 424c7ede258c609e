"""Embeddings as catalog facts: catalog/embeddings/<model>/ holds one model's vectors in Parquet parts (the
`embeddings` view), its `model.json` (the checkpoint's sha256, architecture, input size), its hierarchical
clusters (`clusters.parquet`, the `clusters` view) and the similarity index beside them.

A model key names the architecture and the first 12 hex digits of the checkpoint's sha256, so the same weights
under another file name are the same model, and retrained weights under the same name are not.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from catalog.errors import OrthoError
from catalog.files import atomic_path, atomic_write
from catalog.ids import token
from catalog.schema import CLUSTER, EMBEDDING
from catalog.workspace import Workspace

PART_GLOB = "part-*.parquet"


class EmbeddingError(OrthoError, ValueError):
    """No embeddings of the model asked for, or an image without one."""


@dataclass
class ModelInfo:
    model: str  # the key: <architecture>-<sha256[:12]>
    sha256: str
    checkpoint: str  # the file's name (never its folder)
    architecture: str
    img_size: int
    dims: int
    feature: str = "cls"  # the CLS token after the final norm
    created: str = ""


def model_key(architecture: str, sha256: str) -> str:
    return f"{architecture}-{sha256[:12]}"


def model_dir(ws: Workspace, model: str) -> Path:
    return ws.embeddings_dir / model


def write_model_info(ws: Workspace, info: ModelInfo) -> None:
    folder = model_dir(ws, info.model)
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "model.json").is_file():
        info.created = info.created or dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        atomic_write(folder / "model.json", json.dumps(asdict(info), indent=2) + "\n")


def models(ws: Workspace) -> list[ModelInfo]:
    """Every embedded model, oldest first."""
    out = [ModelInfo(**json.loads(p.read_text())) for p in ws.embeddings_dir.glob("*/model.json")]
    return sorted(out, key=lambda m: (m.created, m.model))


def resolve_model(ws: Workspace, model: str | None) -> ModelInfo:
    """The model of that key (or a unique prefix of it); None: the most recently embedded one."""
    known = models(ws)
    if not known:
        raise EmbeddingError("the catalog holds no embeddings yet: run `ortho embed --checkpoint ...` first")
    if model is None:
        return known[-1]
    hits = [m for m in known if m.model == model] or [m for m in known if m.model.startswith(model)]
    if len(hits) != 1:
        raise EmbeddingError(f"model {model!r} is {'ambiguous' if hits else 'not embedded'}; embedded: "
                             + ", ".join(m.model for m in known))
    return hits[0]


def embedded_ids(ws: Workspace, model: str) -> set[str]:
    ids: set[str] = set()
    for part in sorted(model_dir(ws, model).glob(PART_GLOB)):
        ids.update(pq.read_table(part, columns=["image_id"])["image_id"].to_pylist())
    return ids


def write_part(ws: Workspace, info: ModelInfo, ids: list[str], vectors: np.ndarray) -> Path | None:
    """One part of vectors [N, dims], renamed into place when complete (a killed run leaves none half-written)."""
    if not ids:
        return None
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    flat = pa.array(vectors.ravel(), pa.float32())
    offsets = pa.array(np.arange(0, vectors.size + 1, vectors.shape[1], dtype=np.int32))
    table = pa.table({"image_id": ids, "model": [info.model] * len(ids),
                      "dims": pa.array([vectors.shape[1]] * len(ids), pa.int32()),
                      "vector": pa.ListArray.from_arrays(offsets, flat),
                      "model_sha256": [info.sha256] * len(ids)}, schema=EMBEDDING)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    path = model_dir(ws, info.model) / f"part-{stamp}-{token(4)}.parquet"
    with atomic_path(path) as tmp:  # beside it, hidden: the view's glob never matches a half-written part
        pq.write_table(table, tmp, compression="zstd")
    return path


@contextlib.contextmanager
def model_lock(ws: Workspace, model: str):
    """One writer per model (embedding can take hours, so it does not hold the workspace's write lock and block
    ingest); a killed writer's hidden temporaries are swept once the lock is ours."""
    folder = model_dir(ws, model)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise EmbeddingError(f"model {model}: another process is writing its embeddings") from None
        for stale in folder.glob(".*.tmp"):
            stale.unlink(missing_ok=True)
        yield folder
    finally:
        os.close(fd)


def load_vectors(ws: Workspace, model: str) -> tuple[list[str], np.ndarray]:
    """Every vector of the model, by image id: (ids [N], float32 [N, dims]). The first of two rows of one image
    (two runs racing past the write lock) wins."""
    ids: list[str] = []
    chunks: list[np.ndarray] = []
    seen: set[str] = set()
    for part in sorted(model_dir(ws, model).glob(PART_GLOB)):
        t = pq.read_table(part, columns=["image_id", "dims", "vector"])
        if not t.num_rows:
            continue
        dims = t["dims"][0].as_py()
        flat = pc.list_flatten(t["vector"]).to_numpy(zero_copy_only=False).reshape(-1, dims)
        part_ids = t["image_id"].to_pylist()
        keep = [i for i, x in enumerate(part_ids) if x not in seen]
        seen.update(part_ids)
        ids += [part_ids[i] for i in keep]
        chunks.append(flat[keep] if len(keep) < len(part_ids) else flat)
    if not chunks:
        raise EmbeddingError(f"model {model!r} has no embeddings")
    return ids, np.concatenate(chunks).astype(np.float32, copy=False)


def normalised(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length: cosine similarity becomes an inner product."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def clusters_path(ws: Workspace, model: str) -> Path:
    return model_dir(ws, model) / "clusters.parquet"


def latest_clustered(ws: Workspace) -> str | None:
    """The model clustered most recently (its clusters.parquet is the newest), None before any clustering."""
    paths = list(ws.embeddings_dir.glob("*/clusters.parquet"))
    return max(paths, key=lambda p: p.stat().st_mtime).parent.name if paths else None


def write_clusters(ws: Workspace, model: str, ids: list[str], levels: list[np.ndarray],
                   distances: list[np.ndarray]) -> Path:
    """The `clusters` rows of one model: a row per (image, level); replaces the previous clustering whole."""
    n = len(ids)
    table = pa.table({
        "image_id": ids * len(levels), "model": [model] * (n * len(levels)),
        "level": pa.array(np.repeat(np.arange(1, len(levels) + 1), n), pa.int16()),
        "cluster": pa.array(np.concatenate(levels), pa.int32()),
        "distance": pa.array(np.concatenate(distances), pa.float32())}, schema=CLUSTER)
    path = clusters_path(ws, model)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return path
