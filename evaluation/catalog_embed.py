"""`ortho embed`: one vector per catalog image from a pretrained backbone, kept as catalog facts
(catalog/embeddings.py). Incremental: only images without a vector of this model are read, so a second run adds
nothing and new images alone are embedded. Vectors are written every `part_size` images, so a killed run keeps
what it finished.

The model sees an image as pretraining and evaluation show it (evaluation/embed.py's `preprocess`); the vector is
the CLS token after the final norm.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import duckdb
import numpy as np
import torch

from catalog import db
from catalog import embeddings as emb
from catalog.ids import new_run_id
from catalog.pixel_budget import PixelsRefused
from catalog.store import ImageStore
from catalog.unreadable import Unreadable
from catalog.workspace import Workspace
from evaluation.backbones import Backbone, load_checkpoint
from evaluation.config import POOLS, EmbedConfig  # noqa: F401  (their home: read without torch)
from evaluation.embed import preprocess
from training.backbone import forward_tokens


log = logging.getLogger("ortho.embed")


@dataclass
class EmbedSummary:
    model: str
    sha256: str
    dims: int
    selected: int = 0  # images the query names
    already: int = 0  # of those, embedded by an earlier run
    embedded: int = 0  # by this run
    unreadable: list[str] = field(default_factory=list)  # image ids whose stored pixels could not be read
    unreadable_reasons: dict[str, int] = field(default_factory=dict)  # reason -> images skipped for it
    seconds: float = 0.0

    @property
    def images_per_s(self) -> float:
        return self.embedded / self.seconds if self.seconds else 0.0


def resolve_checkpoint(ws: Workspace, checkpoint: str) -> Path:
    """A path as given, or the name of a pretraining run of the workspace."""
    path = Path(checkpoint)
    if not path.exists() and len(path.parts) == 1 and (ws.train_runs_dir / checkpoint).is_dir():
        return ws.train_runs_dir / checkpoint
    return path


def load_model(ws: Workspace, cfg: EmbedConfig) -> tuple[Backbone, emb.ModelInfo]:
    """The backbone, and its model key: the architecture, with the input size and pooling where they are not the
    defaults, and the checkpoint's sha256."""
    if cfg.pool not in POOLS:
        raise emb.EmbeddingError(f"pool {cfg.pool!r}: use one of {', '.join(POOLS)}")
    bb = load_checkpoint(resolve_checkpoint(ws, cfg.checkpoint), cfg.model_name, cfg.img_size)
    size = cfg.img_size or bb.spec.img_size
    arch = bb.spec.name + ("" if size == bb.spec.img_size else f"@{size}") + ("" if cfg.pool == "cls" else "+mean")
    info = emb.ModelInfo(model=emb.model_key(arch, bb.sha256), sha256=bb.sha256, checkpoint=Path(bb.path).name,
                         architecture=bb.spec.name, img_size=size, dims=bb.spec.embed_dim, feature=cfg.pool)
    return bb, info


def images_to_embed(ws: Workspace, model: str, query: str | None) -> tuple[int, list[str]]:
    """(images the query names, those of them without a vector of `model`), in image id order."""
    chosen = (query or "SELECT image_id FROM images").strip().rstrip(";")
    with db.connection(ws) as con:
        try:
            con.execute(f"SELECT image_id FROM ({chosen}) LIMIT 0")
        except duckdb.Error as e:
            raise emb.EmbeddingError(f"--query failed (it must return image_id): {str(e).splitlines()[0]}") from None
        con.execute(f"CREATE TEMP TABLE chosen AS SELECT DISTINCT c.image_id FROM ({chosen}) c "
                    "SEMI JOIN images i ON i.image_id = c.image_id")
        selected = con.execute("SELECT count(*) FROM chosen").fetchall()[0][0]
        todo = [r[0] for r in con.execute("SELECT image_id FROM chosen ANTI JOIN (SELECT image_id FROM embeddings "
                                          "WHERE model = ?) e USING (image_id) ORDER BY image_id", [model]).fetchall()]
    return selected, todo


@torch.no_grad()
def embed_batch(model: torch.nn.Module, store: ImageStore, ids: list[str], info: emb.ModelInfo, mean: float,
                std: float) -> tuple[list[str], np.ndarray, dict[str, str]]:
    """(ids embedded, their vectors [n, dims], ids whose pixels could not be read -> the reason)."""
    ok, xs, bad = [], [], {}
    for i in ids:
        try:  # within the pixel budget, before anything is decoded (catalog/pixel_budget.py)
            xs.append(preprocess(store.open(i), info.img_size, mean, std))
            ok.append(i)
        except PixelsRefused as e:  # the reason code and the id only (catalog/unreadable.py logs them)
            bad[i] = e.reason
    if not ok:
        return ok, np.zeros((0, info.dims), np.float32), bad
    cls, patches = forward_tokens(model, torch.stack(xs))
    return ok, (cls if info.feature == "cls" else patches.mean(1)).float().numpy(), bad


def embed_catalog(ws: Workspace, cfg: EmbedConfig,
                  on_progress: Callable[[int, int], None] | None = None) -> EmbedSummary:
    """Embed the images `cfg.query` names that have no vector of this model yet."""
    bb, info = load_model(ws, cfg)
    summary = EmbedSummary(info.model, info.sha256, info.dims)
    start = time.perf_counter()
    unreadable = Unreadable("embed", new_run_id())
    with emb.model_lock(ws, info.model):
        emb.write_model_info(ws, info)
        summary.selected, todo = images_to_embed(ws, info.model, cfg.query)
        summary.already = summary.selected - len(todo)
        store, model = ImageStore(ws.store_dir), bb.model.eval()
        ids: list[str] = []
        vecs: list[np.ndarray] = []
        for s in range(0, len(todo), cfg.batch_size):
            done, v, bad = embed_batch(model, store, todo[s:s + cfg.batch_size], info, bb.spec.mean[0], bb.spec.std[0])
            ids += done
            vecs.append(v)
            for image_id, reason in bad.items():
                unreadable.add(image_id, reason)
            if len(ids) >= cfg.part_size:
                emb.write_part(ws, info, ids, np.concatenate(vecs))
                summary.embedded += len(ids)
                ids, vecs = [], []
            if on_progress:
                on_progress(min(s + cfg.batch_size, len(todo)), len(todo))
        if ids:
            emb.write_part(ws, info, ids, np.concatenate(vecs))
            summary.embedded += len(ids)
    unreadable.save(ws)
    summary.unreadable, summary.unreadable_reasons = sorted(unreadable.images), unreadable.counts()
    summary.seconds = time.perf_counter() - start
    return summary
