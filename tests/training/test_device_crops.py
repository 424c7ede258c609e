"""Device-side crops (crops.device=gpu) on CPU tensors: the loader path's crops, per-image determinism, statistics."""

import dataclasses

import numpy as np
import pytest
import torch

from training.augment import PARAMS, CollateCrops, CollatePlans, CropPlan, MultiCrop
from training.config import load_config
from training.device_crops import DeviceCrops, resize_weights

HEIGHT, WIDTH = PARAMS.index("height"), PARAMS.index("width")


def crops_cfg(**extra):
    cfg = load_config(None, ["crops.global_size=64", "crops.local_size=32", "crops.local_crops=3"]).crops
    return dataclasses.replace(cfg, **extra)


def radiographs(n, seed=0):
    """Smooth anatomy-like 16-bit images with noise, of varied sizes, one of them 8-bit."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = int(rng.integers(70, 160)), int(rng.integers(70, 160))
        yy, xx = np.mgrid[0:h, 0:w]
        blob = np.sin(xx / rng.uniform(6, 30)) * np.cos(yy / rng.uniform(6, 30))
        img = ((blob + 1) * 15000 + rng.normal(0, 900, (h, w))).clip(0, 65535).astype(np.uint16)
        out.append((img // 256).astype(np.uint8) if i == 1 else img)
    return [{"__key__": f"{i:04x}", "image": img} for i, img in enumerate(out)]


def loader_batch(cfg, samples, seed=0, epoch=0):
    mc, collate = MultiCrop(cfg, 0.5, 0.25, seed=seed), CollateCrops(8, [0.1, 0.5], 0.5, seed=seed)
    mc.set_epoch(epoch)
    collate.set_epoch(epoch)
    return collate([mc(s) for s in samples])


def device_batch(cfg, samples, seed=0, epoch=0):
    plan, collate = CropPlan(cfg, seed=seed), CollatePlans(8, [0.1, 0.5], 0.5, seed=seed)
    plan.set_epoch(epoch)
    collate.set_epoch(epoch)
    return DeviceCrops(cfg, 0.5, 0.25)(collate([plan(s) for s in samples]))


def test_resize_weights_are_torchs_antialiased_bilinear():
    line = torch.rand(1, 1, 1, 300)
    for start, length, size in ((17, 203, 64), (0, 300, 300), (40, 25, 64)):  # down, identity, up
        w = resize_weights(torch.tensor([start]), torch.tensor([length]), size, 300)[0]
        ref = torch.nn.functional.interpolate(line[..., start:start + length], size=(1, size), mode="bilinear",
                                              antialias=True, align_corners=False)
        assert torch.allclose(w @ line[0, 0, 0], ref.flatten(), atol=1e-6)


def test_on_cpu_the_device_path_gives_the_loader_paths_crops():
    cfg = crops_cfg(flip=True, blur=[1.0, 0.5, 0.5], noise_prob=0.7)  # every transform in play
    samples = radiographs(6)
    a, b = loader_batch(cfg, samples, seed=3), device_batch(cfg, samples, seed=3)
    assert b["global"].shape == a["global"].shape == (12, 1, 64, 64) and b["local"].shape == (18, 1, 32, 32)
    for name in ("global", "local"):
        assert (a[name] - b[name]).abs().max() < 1e-4
    assert torch.equal(a["masks"], b["masks"]) and a["keys"] == b["keys"]


def test_an_images_crops_depend_on_the_image_not_on_its_batch():
    cfg = crops_cfg()
    samples = radiographs(4)
    full = device_batch(cfg, samples)
    other = device_batch(cfg, [samples[3], samples[0]])  # other batch-mates, other places, another pad size
    n = len(samples)
    for crop in range(2):
        assert torch.equal(full["global"][crop * n + 3], other["global"][crop * 2 + 0])
        assert torch.equal(full["global"][crop * n + 0], other["global"][crop * 2 + 1])
    assert not torch.equal(full["global"], device_batch(cfg, samples, epoch=1)["global"])


def test_device_crops_have_the_loader_crops_statistics():
    """Independent draws (another seed) of the two paths: the same intensity and crop-scale distributions."""
    cfg = crops_cfg()
    samples = radiographs(48, seed=1)
    a, b = loader_batch(cfg, samples, seed=0), device_batch(cfg, samples, seed=1)
    for name in ("global", "local"):
        x, y = a[name].flatten(1), b[name].flatten(1)
        assert abs(float(x.mean() - y.mean())) < 0.1 * float(x.std())
        assert float(y.std()) == pytest.approx(float(x.std()), rel=0.1)
        assert float(y.std(1).mean()) == pytest.approx(float(x.std(1).mean()), rel=0.15)
    # Both paths draw their boxes with CropPlan: the scales of one seed's crops against another's, and their bounds
    areas = []
    for seed in (0, 1):
        plans = CollatePlans(8, [0.1, 0.5], 0.5)([CropPlan(cfg, seed=seed)(s) for s in samples])
        areas.append(plans["params"][..., HEIGHT] * plans["params"][..., WIDTH] / plans["sizes"].prod(1)[:, None])
    for rows, (lo, hi) in ((slice(0, 2), cfg.global_scale), (slice(2, None), cfg.local_scale)):
        s0, s1 = areas[0][:, rows], areas[1][:, rows]
        assert float(s1.min()) >= lo * 0.9 and float(s1.max()) <= hi * 1.1
        assert float(s1.mean()) == pytest.approx(float(s0.mean()), rel=0.15)


def test_a_batch_made_in_a_loader_worker_arrives_as_made_in_the_trainer():
    cfg = crops_cfg()
    plan = CropPlan(cfg)
    plans = [plan(s) for s in radiographs(4)]
    collate = CollatePlans(8, [0.1, 0.5], 0.5)
    here = collate(plans)
    loader = torch.utils.data.DataLoader(plans, batch_size=4, num_workers=1, collate_fn=collate)
    there = next(iter(loader))  # written into shared memory in the worker
    assert there["images"].dtype == torch.uint16 and torch.equal(there["images"], here["images"])
    assert torch.equal(there["params"], here["params"]) and torch.equal(there["masks"], here["masks"])
    h, w = plans[0]["image"].shape
    assert torch.equal(there["images"][0, :h, :w], torch.from_numpy(plans[0]["image"].astype(np.uint16)))
    assert int(there["images"][0, h:].sum()) == 0  # padding is zero
