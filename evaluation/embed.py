"""Frozen features of a task's images: CLS token and mean-pooled patch tokens, cached in Parquet.

Images are read from the de-identified store and shown to the model as pretraining showed them:
the image's robust intensity range mapped to [0, 1], resized to the model's input size, then the
model's own mean and std. The cache is keyed by (checkpoint sha256, input size, image id), so a
second protocol, seed or label fraction never re-embeds.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from catalog.files import atomic_path
from catalog.pixels import robust_range
from catalog.store import ImageStore
from catalog.workspace import Workspace
from evaluation.config import EvalConfig
from training.backbone import forward_tokens


def preprocess(pixels: np.ndarray, size: int, mean: float, std: float) -> torch.Tensor:
    """[H, W] uint8/uint16 -> [1, size, size] float, normalised as the model expects."""
    if pixels.ndim == 3:
        pixels = pixels[..., :3].mean(axis=-1)
    lo, hi = robust_range(pixels)
    x = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))[None, None]
    x = ((x - lo) / (hi - lo)).clamp_(0, 1)
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
    return (x - mean) / std


_CACHE_SCHEMA = pa.schema([("image_id", pa.string()), ("cls", pa.list_(pa.float32())),
                           ("mean", pa.list_(pa.float32()))])


class FeatureCache:
    """evals/embeddings/<key>.parquet files, one per (model key, size); appended as new images come."""

    def __init__(self, ws: Workspace, key: str):
        self.dir = ws.feature_cache_dir / key
        self.dir.mkdir(parents=True, exist_ok=True)

    def load(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        out = {}
        for part in sorted(self.dir.glob("*.parquet")):
            t = pq.read_table(part)
            for i, c, m in zip(t["image_id"].to_pylist(), t["cls"].to_pylist(), t["mean"].to_pylist()):
                out[i] = (np.asarray(c, np.float32), np.asarray(m, np.float32))
        return out

    def add(self, ids: list[str], cls: np.ndarray, mean: np.ndarray) -> None:
        if not ids:
            return
        table = pa.table({"image_id": ids, "cls": list(cls.astype(np.float32)), "mean": list(mean.astype(np.float32))},
                         schema=_CACHE_SCHEMA)
        name = hashlib.blake2b("".join(ids).encode(), digest_size=8).hexdigest()
        with atomic_path(self.dir / f"{name}.parquet") as tmp:
            pq.write_table(table, tmp)


@torch.no_grad()
def embed_images(ws: Workspace, model: torch.nn.Module, image_ids: list[str], size: int, mean: float, std: float,
                 cache_key: str | None = None, batch_size: int = EvalConfig.batch_size, device: str = "cpu",
                 on_progress=None, images=None) -> tuple[np.ndarray, np.ndarray]:
    """(cls [N, D], mean-pooled patches [N, D]) for the images, in order; cached when cache_key is given."""
    cache = FeatureCache(ws, f"{cache_key}-{size}") if cache_key else None
    have = cache.load() if cache else {}
    todo = [i for i in dict.fromkeys(image_ids) if i not in have]
    store = images or ImageStore(ws.store_dir)  # anything with .get(image_id) -> pixels
    model = model.to(device).eval()
    for start in range(0, len(todo), batch_size):
        ids = todo[start:start + batch_size]
        x = torch.stack([preprocess(store.get(i), size, mean, std) for i in ids]).to(device)
        cls, patches = forward_tokens(model, x)
        c, m = cls.float().cpu().numpy(), patches.float().mean(1).cpu().numpy()
        for i, a, b in zip(ids, c, m):
            have[i] = (a, b)
        if cache:
            cache.add(ids, c, m)
        if on_progress:
            on_progress(min(start + batch_size, len(todo)), len(todo))
    cls = np.stack([have[i][0] for i in image_ids]) if image_ids else np.zeros((0, 0), np.float32)
    mean_ = np.stack([have[i][1] for i in image_ids]) if image_ids else np.zeros((0, 0), np.float32)
    return cls, mean_


def pixel_features(ws: Workspace, image_ids: list[str], size: int = 64, images=None) -> np.ndarray:
    """Raw pixels as features (the baseline any learned representation must beat): [N, size*size]."""
    store = images or ImageStore(ws.store_dir)
    return np.stack([preprocess(store.get(i), size, 0.0, 1.0).numpy().ravel() for i in image_ids])
