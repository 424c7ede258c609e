"""More like this: the nearest catalog images of one image by embedding (cosine), from a faiss index kept beside
the model's vectors (catalog/embeddings/<model>/index.faiss).

The index is exact (inner product over unit vectors). It is brought up to date incrementally: `index.json` lists
the Parquet parts already in it, and only parts written since are read and added. The id list is written before
the index, each renamed into place; a count that disagrees (a run killed between the two) rebuilds it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import duckdb
import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from catalog import db
from catalog import embeddings as emb
from catalog.files import atomic_path, atomic_write
from catalog.workspace import Workspace

MORE_LIKE_K = 20  # images `ortho search` shows


@dataclass
class Neighbour:
    image_id: str
    similarity: float


def _paths(ws: Workspace, model: str) -> tuple[Path, Path, Path]:
    folder = emb.model_dir(ws, model)
    return folder / "index.faiss", folder / "index_ids.parquet", folder / "index.json"


def _load(ws: Workspace, model: str, dims: int) -> tuple[faiss.Index, list[str], list[str]]:
    """(index, its ids in order, the parts in it); empty when missing or inconsistent."""
    index_path, ids_path, meta_path = _paths(ws, model)
    try:
        index = faiss.read_index(str(index_path))
        ids = pq.read_table(ids_path)["image_id"].to_pylist()
        parts = json.loads(meta_path.read_text())["parts"]
        if index.ntotal == len(ids) and index.d == dims:
            return index, ids, parts
    except (OSError, RuntimeError, ValueError, KeyError):
        pass
    return faiss.IndexFlatIP(dims), [], []


def _save(ws: Workspace, model: str, index: faiss.Index, ids: list[str], parts: list[str]) -> None:
    index_path, ids_path, meta_path = _paths(ws, model)
    with atomic_path(ids_path) as tmp:
        pq.write_table(pa.table({"image_id": ids}), tmp)
    with atomic_path(index_path) as tmp:
        faiss.write_index(index, str(tmp))
    atomic_write(meta_path, json.dumps({"parts": parts}) + "\n")


def update_index(ws: Workspace, model: str | None = None) -> tuple[faiss.Index, list[str], int]:
    """(the model's index, its image ids by position, vectors added now): parts not yet indexed are added."""
    info = emb.resolve_model(ws, model)
    index, ids, parts = _load(ws, info.model, info.dims)
    have = set(ids)
    added = 0
    new_parts = sorted(p.name for p in emb.model_dir(ws, info.model).glob(emb.PART_GLOB) if p.name not in set(parts))
    for name in new_parts:
        t = pq.read_table(emb.model_dir(ws, info.model) / name, columns=["image_id", "vector"])
        part_ids = t["image_id"].to_pylist()
        x = pc.list_flatten(t["vector"]).to_numpy(zero_copy_only=False).reshape(len(part_ids), -1)
        keep = [i for i, v in enumerate(part_ids) if v not in have]
        if keep:
            index.add(emb.normalised(np.ascontiguousarray(x[keep], np.float32)))
            ids += [part_ids[i] for i in keep]
            have.update(part_ids[i] for i in keep)
            added += len(keep)
    if new_parts:
        _save(ws, info.model, index, ids, parts + new_parts)
    return index, ids, added


def _allowed(ws: Workspace, query: str) -> set[str]:
    with db.connection(ws) as con:
        try:
            rows = con.execute(f"SELECT DISTINCT image_id FROM ({query.strip().rstrip(';')})").fetchall()
        except duckdb.Error as e:
            raise emb.EmbeddingError(f"--query failed (it must return image_id): {str(e).splitlines()[0]}") from None
    return {r[0] for r in rows}


def more_like(ws: Workspace, image_id: str, k: int = MORE_LIKE_K, query: str | None = None,
              model: str | None = None) -> list[Neighbour]:
    """The k images most like `image_id` (itself left out), most similar first; only among those `query` names
    when given."""
    index, ids, _ = update_index(ws, model)
    pos = {v: i for i, v in enumerate(ids)}
    if image_id not in pos:
        raise emb.EmbeddingError(f"image {image_id} has no embedding of this model: run `ortho embed` first")
    q = index.reconstruct(pos[image_id]).reshape(1, -1)
    params = None
    if query:
        allowed = np.array(sorted(pos[i] for i in _allowed(ws, query) if i in pos and i != image_id), np.int64)
        if not len(allowed):
            return []
        params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(allowed))
    sim, nn = index.search(q, min(k + 1, index.ntotal), params=params)
    out = [Neighbour(ids[j], float(s)) for s, j in zip(sim[0], nn[0]) if j >= 0 and ids[j] != image_id]
    return out[:k]
