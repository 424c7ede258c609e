"""Multi-crop augmentation for radiographs and MRI slices, from the stored 8/16-bit pixels.

No colour jitter (grey images); instead the intensity transforms a radiologist's viewer applies: a
random window over the image's robust range, gamma, blur and noise. Flips are off by default
because laterality is part of the anatomy.

Two paths, one set of draws (`crops.device`): `loader` crops in the loader workers (MultiCrop,
CollateCrops); `gpu` has the workers decode, draw the crop parameters and hand over the uint16
pixels (CropPlan, CollatePlans), and training/device_crops.py cuts all crops of a batch at once on
the training device. Every random draw comes from a generator seeded by (seed, epoch, image key),
the noise from a torch generator seeded from it, and the iBOT masks of a batch from (seed, epoch,
its keys): a resumed run sees exactly the crops an uninterrupted one would, whatever the worker
count or order, and on CPU both paths give the same crops.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import torch
import torch.nn.functional as F

from catalog.pixels import robust_range
from training.config import CropsConfig


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
        cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw
    side = min(h, w)
    return (h - side) // 2, (w - side) // 2, side, side


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum()).to(x.dtype)
    x = F.pad(x[None], (radius, radius, radius, radius), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1))
    x = F.conv2d(x, k.view(1, 1, -1, 1))
    return x[0]


# One row per crop, in crop order (2 global, then the local ones): what both crop paths apply.
PARAMS = ("top", "left", "height", "width", "flip", "window_lo", "window_hi", "gamma", "blur_sigma", "noise_std")
TOP, LEFT, HEIGHT, WIDTH, FLIP, WINDOW_LO, WINDOW_HI, GAMMA, BLUR_SIGMA, NOISE_STD = range(len(PARAMS))
N_GLOBAL = 2


def draw_crop_params(rng: np.random.Generator, h: int, w: int, lo: float, hi: float, c: CropsConfig) -> np.ndarray:
    """[2 + local_crops, len(PARAMS)] float64: every random choice of one image's crops, drawn in crop order."""
    rows = []
    for i in range(N_GLOBAL + c.local_crops):
        size, scale, blur_p = ((c.global_size, c.global_scale, c.blur[i]) if i < N_GLOBAL
                               else (c.local_size, c.local_scale, c.blur[2]))
        top, left, ch, cw = _crop_box(rng, h, w, tuple(scale))
        flip = bool(c.flip) and rng.random() < 0.5
        span, j = hi - lo, c.window_jitter
        w_lo, w_hi = lo + span * j * rng.uniform(-1, 1), hi + span * j * rng.uniform(-1, 1)
        if w_hi - w_lo < 0.05 * span:
            w_lo, w_hi = lo, hi
        g0, g1 = c.gamma
        gamma = math.exp(rng.uniform(math.log(g0), math.log(g1)))
        sigma = rng.uniform(*c.blur_sigma) * size / c.global_size if rng.random() < blur_p else 0.0
        noise = rng.uniform(0, c.noise) if c.noise > 0 and rng.random() < c.noise_prob else 0.0
        rows.append((top, left, ch, cw, flip, w_lo, w_hi, gamma, sigma, noise))
    return np.array(rows, dtype=np.float64).reshape(-1, len(PARAMS))


def crop_noise(generator: torch.Generator, params: torch.Tensor | np.ndarray, size: int,
               device: torch.device | str = "cpu") -> torch.Tensor | None:
    """N(0, 1) [n, 1, size, size] for one image's crops of one size, or None when none of them is noisy.

    Drawn by both crop paths in the same calls from a generator seeded per image: on CPU they add the same noise."""
    if not (params[:, NOISE_STD] > 0).any():
        return None
    return torch.randn((len(params), 1, size, size), generator=generator, device=device)


def luminance(image: np.ndarray) -> np.ndarray:
    return image[..., :3].mean(axis=-1) if image.ndim == 3 else image  # a stray colour image


class CropPlan:
    """sample {"__key__", "image": [H, W]} -> {"__key__", "image", "params": [n, len(PARAMS)], "noise_seed"}.

    The loader's half of either crop path: the image's robust window and every random draw, from a generator
    seeded by (seed, epoch, image key). Cheap: the pixels are only sampled for the window.

    A sample still compressed ({"__key__", "payload", "ext", "shape"}: decoded later on the training device) gets
    the same draws with its window relative to a robust range of [0, 1]; training/device_crops.py turns it into
    levels once the pixels are there (`relative_window`). Only the window depends on the pixels."""

    def __init__(self, crops: CropsConfig, seed: int = 0):
        self.c, self.seed, self.epoch = crops, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __call__(self, sample: dict) -> dict:
        key = sample["__key__"]
        rng = np.random.default_rng(_seed(self.seed, self.epoch, key))
        if "payload" in sample:
            params = draw_crop_params(rng, *sample["shape"], 0.0, 1.0, self.c)
            return {"__key__": key, "payload": sample["payload"], "ext": sample["ext"], "shape": sample["shape"],
                    "params": params, "noise_seed": int(rng.integers(2**62))}
        image = luminance(sample["image"])
        lo, hi = robust_range(image)
        params = draw_crop_params(rng, image.shape[0], image.shape[1], lo, hi, self.c)
        return {"__key__": key, "image": image, "params": params, "noise_seed": int(rng.integers(2**62))}


class MultiCrop(CropPlan):
    """sample {"__key__", "image": [H, W] uint8/uint16} -> {"__key__", "global": [G, 1, S, S], "local": [L, 1, s, s]}.

    The loader-side crop path (crops.device=loader): the plan applied to one image in the worker."""

    n_global = N_GLOBAL

    def __init__(self, crops: CropsConfig, mean: float, std: float, seed: int = 0):
        super().__init__(crops, seed)
        self.mean, self.std = float(mean), float(std)

    def __call__(self, sample: dict) -> dict:
        plan = super().__call__(sample)
        c, params = self.c, plan["params"]
        x = torch.from_numpy(np.ascontiguousarray(plan["image"], dtype=np.float32))[None]
        g = torch.Generator().manual_seed(plan["noise_seed"])
        out = {"__key__": plan["__key__"]}
        for name, rows, size in (("global", params[:N_GLOBAL], c.global_size),
                                 ("local", params[N_GLOBAL:], c.local_size)):
            noise = crop_noise(g, rows, size)
            crops = [self._crop(x, p, size, None if noise is None else noise[i]) for i, p in enumerate(rows)]
            out[name] = torch.stack(crops) if crops else torch.zeros(0, 1, size, size)
        return out

    def _crop(self, x: torch.Tensor, p: np.ndarray, size: int, noise: torch.Tensor | None) -> torch.Tensor:
        top, left, ch, cw = (int(v) for v in p[[TOP, LEFT, HEIGHT, WIDTH]])
        crop = x[:, top:top + ch, left:left + cw]
        crop = F.interpolate(crop[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
        if p[FLIP]:
            crop = crop.flip(-1)
        crop = ((crop - p[WINDOW_LO]) / (p[WINDOW_HI] - p[WINDOW_LO])).clamp_(0, 1)
        crop = crop.pow(float(p[GAMMA]))
        if p[BLUR_SIGMA] > 0:
            crop = _gaussian_blur(crop, float(p[BLUR_SIGMA]))
        if p[NOISE_STD] > 0:
            crop = (crop + noise * float(p[NOISE_STD])).clamp_(0, 1)
        return (crop - self.mean) / self.std


def block_mask(rng: np.random.Generator, h: int, w: int, ratio: float, min_block: int = 4) -> np.ndarray:
    """[h, w] bool with about `ratio` of the patches masked in rectangles (BEiT/iBOT block masking)."""
    mask = np.zeros((h, w), dtype=bool)
    target = round(ratio * h * w)
    for _ in range(100):
        missing = target - int(mask.sum())
        if missing <= 0:
            break
        area = rng.uniform(min_block, max(min_block, missing))
        aspect = math.exp(rng.uniform(math.log(0.3), math.log(1 / 0.3)))
        bh = min(h, max(1, round(math.sqrt(area * aspect))))
        bw = min(w, max(1, round(math.sqrt(area / aspect))))
        top, left = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
        mask[top:top + bh, left:left + bw] = True
    return mask


def ibot_masks(keys: list[str], n: int, grid: int, ratio: list[float], probability: float, seed: int,
               epoch: int) -> torch.Tensor:
    """[n, grid * grid] bool: a share `probability` of the n global crops masked, ratios spread over `ratio`;
    drawn from (seed, epoch, the batch's keys)."""
    rng = np.random.default_rng(_seed(seed, epoch, *keys))
    masked = round(n * probability)
    ratios = np.linspace(ratio[0], ratio[1], masked) if masked else []
    masks = np.zeros((n, grid * grid), dtype=bool)
    for i, r in zip(rng.permutation(n)[:masked], ratios):
        masks[i] = block_mask(rng, grid, grid, float(r)).ravel()
    return torch.from_numpy(masks)


class CollateCrops:
    """A list of MultiCrop outputs -> one batch, crop-major, with iBOT masks for the global crops.

    Returns {"keys": [B], "global": [G*B, 1, S, S], "local": [L*B, 1, s, s], "masks": [G*B, P] bool}."""

    def __init__(self, grid: int, mask_ratio: list[float], mask_probability: float, seed: int = 0):
        self.grid, self.ratio, self.prob, self.seed, self.epoch = grid, mask_ratio, mask_probability, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def masks(self, keys: list[str], n: int) -> torch.Tensor:
        return ibot_masks(keys, n, self.grid, self.ratio, self.prob, self.seed, self.epoch)

    def __call__(self, samples: list[dict]) -> dict:
        keys = [s["__key__"] for s in samples]
        g = torch.cat([torch.stack([s["global"][i] for s in samples]) for i in range(samples[0]["global"].shape[0])])
        n_local = samples[0]["local"].shape[0]
        loc = (torch.cat([torch.stack([s["local"][i] for s in samples]) for i in range(n_local)])
               if n_local else None)
        return {"keys": keys, "global": g, "local": loc, "masks": self.masks(keys, g.shape[0])}


class CollatePlans(CollateCrops):
    """A list of CropPlan outputs -> one batch for training.device_crops.DeviceCrops.

    Returns {"keys": [B], "images": [B, H, W] uint16 (zero-padded to the batch's largest image; 8-bit values as
    they are), "sizes": [B, 2] int64, "params": [B, n, len(PARAMS)] float64, "noise_seeds": [B] int64,
    "masks": [G*B, P] bool}: one tensor of pixels, so it travels through shared memory and pinned memory at once."""

    def __call__(self, samples: list[dict]) -> dict:
        if "payload" in samples[0]:
            return self._compressed(samples)
        keys = [s["__key__"] for s in samples]
        sizes = np.array([s["image"].shape[:2] for s in samples], dtype=np.int64)
        images = torch.zeros((len(samples), *sizes.max(0)), dtype=torch.uint16)
        if torch.utils.data.get_worker_info() is not None:
            images.share_memory_()  # written in place: the batch is not copied again on its way to the trainer
        pixels = images.numpy()
        for out, s in zip(pixels, samples):
            out[:s["image"].shape[0], :s["image"].shape[1]] = s["image"]
        params = torch.from_numpy(np.stack([s["params"] for s in samples]))
        return {"keys": keys, "images": images, "sizes": torch.from_numpy(sizes), "params": params,
                "noise_seeds": torch.tensor([s["noise_seed"] for s in samples], dtype=torch.int64),
                "masks": self.masks(keys, N_GLOBAL * len(samples))}

    def _compressed(self, samples: list[dict]) -> dict:
        """Payloads still compressed: {"keys", "payloads": [B] bytes, "exts": [B], "sizes", "params" (windows
        relative to each image's robust range), "noise_seeds", "masks", "relative_window": True}."""
        keys = [s["__key__"] for s in samples]
        return {"keys": keys, "payloads": [s["payload"] for s in samples], "exts": [s["ext"] for s in samples],
                "sizes": torch.tensor([s["shape"] for s in samples], dtype=torch.int64),
                "params": torch.from_numpy(np.stack([s["params"] for s in samples])),
                "noise_seeds": torch.tensor([s["noise_seed"] for s in samples], dtype=torch.int64),
                "masks": self.masks(keys, N_GLOBAL * len(samples)), "relative_window": True}
