"""Frozen features from the store, cached by (model key, size, image id)."""

import numpy as np
import torch

from evaluation.data import load_task
from evaluation.embed import embed_images, pixel_features
from training.backbone import build_backbone


def test_task_images_embed_in_order_and_come_from_the_cache_the_second_time(tmp_path, phantom_workspace, monkeypatch):
    import shutil

    from catalog.workspace import Workspace
    from curation.run import curate

    src, _ = phantom_workspace
    ws = Workspace.open(tmp_path / "workspace")
    shutil.copytree(src.root, ws.root, dirs_exist_ok=True)
    curate(ws)  # splits
    data = load_task(ws, "kl_grade")
    assert len(data.image_ids) > 4 and set(data.splits) <= {"train", "val", "test"}
    assert data.labels.min() >= 0 and data.labels.max() <= 4
    torch.manual_seed(0)
    model, spec, _ = build_backbone("vit_pico_patch8_dinov3", img_size=32)
    ids = data.image_ids[:6]
    cls, mean = embed_images(ws, model, ids, 32, spec.mean[0], spec.std[0], cache_key="test-model", batch_size=4)
    assert cls.shape == (6, spec.embed_dim) and mean.shape == (6, spec.embed_dim)
    monkeypatch.setattr("evaluation.embed.forward_tokens", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    cls2, mean2 = embed_images(ws, model, ids[::-1], 32, spec.mean[0], spec.std[0], cache_key="test-model")
    assert np.array_equal(cls2, cls[::-1]) and np.array_equal(mean2, mean[::-1])
    px = pixel_features(ws, ids, 16)
    assert px.shape == (6, 256) and 0.0 <= px.min() and px.max() <= 1.0
