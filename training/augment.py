"""Multi-crop augmentation for radiographs and MRI slices, from the stored 8/16-bit pixels.

Runs in the loader workers. No colour jitter (grey images); instead the intensity transforms a
radiologist's viewer applies: a random window over the image's robust range, gamma, blur and
noise. Flips are off by default because laterality is part of the anatomy.

Every random draw comes from a generator seeded by (seed, epoch, image key), and the iBOT masks of
a batch from (seed, epoch, its keys): a resumed run sees exactly the crops an uninterrupted one
would, whatever the worker count or order.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import torch
import torch.nn.functional as F

from catalog.pixels import robust_range


def _seed(*parts) -> list[int]:
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=16).digest()
    return [int.from_bytes(digest[i:i + 4], "little") for i in range(0, 16, 4)]


def _crop_box(rng: np.random.Generator, h: int, w: int, scale: tuple[float, float],
              ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop box, drawn from `rng`."""
    area = h * w
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw, ch = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw
    side = min(h, w)
    return (h - side) // 2, (w - side) // 2, side, side


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum()).to(x.dtype)
    x = F.pad(x[None], (radius, radius, radius, radius), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1))
    x = F.conv2d(x, k.view(1, 1, -1, 1))
    return x[0]


class MultiCrop:
    """sample {"__key__", "image": [H, W] uint8/uint16} -> {"__key__", "global": [G, 1, S, S], "local": [L, 1, s, s]}."""

    n_global = 2

    def __init__(self, crops: dict, mean: float, std: float, seed: int = 0):
        self.c, self.mean, self.std, self.seed, self.epoch = crops, float(mean), float(std), seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __call__(self, sample: dict) -> dict:
        key = sample["__key__"]
        rng = np.random.default_rng(_seed(self.seed, self.epoch, key))
        image = sample["image"]
        if image.ndim == 3:  # a stray colour image: luminance
            image = image[..., :3].mean(axis=-1)
        lo, hi = robust_range(image)
        x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]
        c = self.c
        blur = c["blur"]
        globals_ = [self._crop(x, lo, hi, rng, c["global_size"], c["global_scale"], blur[i]) for i in range(2)]
        locals_ = [self._crop(x, lo, hi, rng, c["local_size"], c["local_scale"], blur[2])
                   for _ in range(c["local_crops"])]
        out = {"__key__": key, "global": torch.stack(globals_)}
        out["local"] = torch.stack(locals_) if locals_ else torch.zeros(0, 1, c["local_size"], c["local_size"])
        return out

    def _crop(self, x: torch.Tensor, lo: float, hi: float, rng: np.random.Generator, size: int,
              scale: list[float], blur_p: float) -> torch.Tensor:
        c = self.c
        _, h, w = x.shape
        top, left, ch, cw = _crop_box(rng, h, w, tuple(scale))
        crop = x[:, top:top + ch, left:left + cw]
        crop = F.interpolate(crop[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
        if c["flip"] and rng.random() < 0.5:
            crop = crop.flip(-1)
        span, j = hi - lo, c["window_jitter"]
        w_lo = lo + span * j * rng.uniform(-1, 1)
        w_hi = hi + span * j * rng.uniform(-1, 1)
        if w_hi - w_lo < 0.05 * span:
            w_lo, w_hi = lo, hi
        crop = ((crop - w_lo) / (w_hi - w_lo)).clamp_(0, 1)
        g0, g1 = c["gamma"]
        crop = crop.pow(math.exp(rng.uniform(math.log(g0), math.log(g1))))
        if rng.random() < blur_p:
            s0, s1 = c["blur_sigma"]
            crop = _gaussian_blur(crop, rng.uniform(s0, s1) * size / c["global_size"])
        if c["noise"] > 0 and rng.random() < c["noise_prob"]:
            noise = torch.from_numpy(rng.standard_normal(crop.shape, dtype=np.float32))
            crop = (crop + noise * rng.uniform(0, c["noise"])).clamp_(0, 1)
        return (crop - self.mean) / self.std


def block_mask(rng: np.random.Generator, h: int, w: int, ratio: float, min_block: int = 4) -> np.ndarray:
    """[h, w] bool with about `ratio` of the patches masked in rectangles (BEiT/iBOT block masking)."""
    mask = np.zeros((h, w), dtype=bool)
    target = int(round(ratio * h * w))
    for _ in range(100):
        missing = target - int(mask.sum())
        if missing <= 0:
            break
        area = rng.uniform(min_block, max(min_block, missing))
        aspect = math.exp(rng.uniform(math.log(0.3), math.log(1 / 0.3)))
        bh = min(h, max(1, int(round(math.sqrt(area * aspect)))))
        bw = min(w, max(1, int(round(math.sqrt(area / aspect)))))
        top, left = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
        mask[top:top + bh, left:left + bw] = True
    return mask


class CollateCrops:
    """A list of MultiCrop outputs -> one batch, crop-major, with iBOT masks for the global crops.

    Returns {"keys": [B], "global": [G*B, 1, S, S], "local": [L*B, 1, s, s], "masks": [G*B, P] bool}."""

    def __init__(self, grid: int, mask_ratio: list[float], mask_probability: float, seed: int = 0):
        self.grid, self.ratio, self.prob, self.seed, self.epoch = grid, mask_ratio, mask_probability, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __call__(self, samples: list[dict]) -> dict:
        keys = [s["__key__"] for s in samples]
        g = torch.cat([torch.stack([s["global"][i] for s in samples]) for i in range(samples[0]["global"].shape[0])])
        n_local = samples[0]["local"].shape[0]
        loc = (torch.cat([torch.stack([s["local"][i] for s in samples]) for i in range(n_local)])
               if n_local else None)
        rng = np.random.default_rng(_seed(self.seed, self.epoch, *keys))
        n = g.shape[0]
        masked = int(round(n * self.prob))
        ratios = np.linspace(self.ratio[0], self.ratio[1], masked) if masked else []
        masks = np.zeros((n, self.grid * self.grid), dtype=bool)
        for i, r in zip(rng.permutation(n)[:masked], ratios):
            masks[i] = block_mask(rng, self.grid, self.grid, float(r)).ravel()
        return {"keys": keys, "global": g, "local": loc, "masks": torch.from_numpy(masks)}
