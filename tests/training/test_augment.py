"""Multi-crop from 16-bit pixels: depth kept, draws reproducible per (seed, epoch, key), flips opt-in."""

import dataclasses

import numpy as np
import torch

from training.augment import CollateCrops, MultiCrop, block_mask
from training.config import load_config


def crops_cfg(**extra):
    cfg = load_config(None, ["crops.global_size=64", "crops.local_size=32", "crops.local_crops=3"]).crops
    return dataclasses.replace(cfg, **extra)


def gradient16(h=128, w=128):
    return (np.linspace(0, 60000, h * w).reshape(h, w)).astype(np.uint16)


def test_shapes_and_16_bit_depth_survives():
    mc = MultiCrop(crops_cfg(noise=0.0, blur=[0.0, 0.0, 0.0], window_jitter=0.0, gamma=[1.0, 1.0],
                             global_scale=[1.0, 1.0]), mean=0.0, std=1.0)
    out = mc({"__key__": "a", "image": gradient16()})
    assert out["global"].shape == (2, 1, 64, 64) and out["local"].shape == (3, 1, 32, 32)
    assert out["global"].dtype == torch.float32
    # 4096 pixels of a smooth 16-bit ramp: far more distinct levels than 8 bits could hold
    assert len(torch.unique(out["global"][0])) > 1000


def test_draws_depend_only_on_seed_epoch_and_key():
    mc = MultiCrop(crops_cfg(), mean=0.5, std=0.25, seed=7)
    img = gradient16()
    a, b = mc({"__key__": "k1", "image": img}), mc({"__key__": "k1", "image": img})
    assert torch.equal(a["global"], b["global"]) and torch.equal(a["local"], b["local"])
    assert not torch.equal(a["global"], mc({"__key__": "k2", "image": img})["global"])
    mc.set_epoch(1)
    assert not torch.equal(a["global"], mc({"__key__": "k1", "image": img})["global"])


def test_no_flips_unless_asked():
    img = np.zeros((64, 64), np.uint16)
    img[:, :16] = 50000  # bright on the left: a flip would put it on the right
    plain = crops_cfg(global_scale=[1.0, 1.0], noise=0.0, blur=[0.0, 0.0, 0.0])
    for key in map(str, range(20)):
        g = MultiCrop(plain, 0.0, 1.0)({"__key__": key, "image": img})["global"]
        assert g[0, 0, :, :8].mean() > g[0, 0, :, -8:].mean()
    flipped = [MultiCrop(dataclasses.replace(plain, flip=True), 0.0, 1.0)({"__key__": k, "image": img})["global"][0, 0]
               for k in map(str, range(20))]
    assert any(g[:, :8].mean() < g[:, -8:].mean() for g in flipped)


def test_collate_is_crop_major_and_masks_respect_ratio_and_probability():
    mc = MultiCrop(crops_cfg(), 0.5, 0.25)
    samples = [mc({"__key__": f"k{i}", "image": gradient16()}) for i in range(8)]
    batch = CollateCrops(grid=8, mask_ratio=[0.1, 0.5], mask_probability=0.5)(samples)
    assert batch["global"].shape == (16, 1, 64, 64) and batch["local"].shape == (24, 1, 32, 32)
    assert torch.equal(batch["global"][1], samples[1]["global"][0])  # crop 0 of every image first
    assert torch.equal(batch["global"][8 + 1], samples[1]["global"][1])
    per_image = batch["masks"].float().mean(1)
    assert int((per_image > 0).sum()) == 8  # half of the 16 global crops
    assert per_image.max() <= 0.5 + 1 / 64 + 0.2  # block masking overshoots by at most a block
    again = CollateCrops(grid=8, mask_ratio=[0.1, 0.5], mask_probability=0.5)(samples)
    assert torch.equal(batch["masks"], again["masks"])


def test_block_mask_hits_its_ratio():
    m = block_mask(np.random.default_rng(0), 14, 14, 0.4)
    assert 0.35 <= m.mean() <= 0.6
