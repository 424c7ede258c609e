"""The device-side crop path (crops.device=gpu): every crop of a batch cut at once, on the training device.

The loader workers decode, draw each image's crop parameters (training/augment.py, CropPlan) and hand over the
uint16 pixels; here the crops are made with batched torch ops, the same on CUDA and on CPU tensors:

- resize: each crop is `Wy @ image @ Wx^T`, with Wy [S, H] and Wx [S, W] the weights of torchvision's antialiased
  bilinear resize of the crop box (zero outside it), so one batched matmul per crop size replaces a resize per
  crop, and gives what `F.interpolate(crop, antialias=True)` gives; a flip reverses the rows of Wx;
- window, gamma: per-crop scalars broadcast over the batch;
- blur: a grouped convolution with each crop's own Gaussian (a unit impulse for crops left sharp);
- noise: drawn per image from a generator seeded by the image's plan, as the loader path draws it.

On CPU the output equals the loader path's to float rounding (tests/training/test_device_crops.py); on CUDA the
noise comes from CUDA's generator, so crops agree in distribution.

A batch may also arrive still compressed (crops.decode, training/data.py): it is decoded here on the device
(shards/device_decode.py: nvImageCodec on CUDA, else the CPU codec), each image's robust window is measured from
the decoded pixels as catalog.pixels.robust_range measures it, and the plan's relative windows become levels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from shards.device_decode import BatchDecoder
from training.augment import (BLUR_SIGMA, FLIP, GAMMA, HEIGHT, LEFT, N_GLOBAL, NOISE_STD, TOP, WIDTH, WINDOW_HI,
                              WINDOW_LO, crop_noise)
from training.config import CropsConfig

PIXEL_BUDGET = 1 << 25  # float32 elements of one image chunk or weight matrix (128 MB): bounds a batch's memory


def resize_weights(start: torch.Tensor, length: torch.Tensor, size: int, full: int) -> torch.Tensor:
    """[N, size, full] float32: row o holds the weights output pixel o of an antialiased bilinear resize of the
    window [start, start + length) of a line of `full` pixels gives each source pixel (PyTorch's `antialias=True`
    weights: a triangle of half-width max(scale, 1), clipped to the window and normalised)."""
    start, length = start.float()[:, None, None], length.float()[:, None, None]
    scale = length / size
    support = scale.clamp(min=1.0)
    center = scale * (torch.arange(size, dtype=torch.float32, device=start.device)[None, :, None] + 0.5)
    local = torch.arange(full, dtype=torch.float32, device=start.device)[None, None, :] - start  # [N, 1, full]
    w = (local + 0.5 - center).div_(support).abs_().neg_().add_(1).clamp_(min=0)
    w.mul_((local >= 0) & (local < length))
    return w.div_(w.sum(-1, keepdim=True))


def blur_kernels(sigma: torch.Tensor) -> tuple[torch.Tensor, int]:
    """[N] sigmas (0: no blur) -> ([N, 2R + 1] float32 kernels, R): each crop's Gaussian of radius
    max(1, ceil(3 sigma)) as the loader path builds it, zero beyond its own radius, or a unit impulse."""
    radii = [max(1, math.ceil(3 * s)) if s > 0 else 0 for s in sigma.tolist()]
    big = max(radii)
    t = torch.arange(-big, big + 1, dtype=torch.float32)
    kernels = torch.zeros(len(radii), 2 * big + 1)
    for i, (s, r) in enumerate(zip(sigma.tolist(), radii)):
        if r == 0:
            kernels[i, big] = 1.0
            continue
        k = torch.exp(-0.5 * (t[big - r:big + r + 1] / s) ** 2)
        kernels[i, big - r:big + r + 1] = k / k.sum()
    return kernels, big


def separable_blur(x: torch.Tensor, kernels: torch.Tensor, radius: int) -> torch.Tensor:
    """x [N, 1, S, S], kernels [N, 2R + 1] -> each crop blurred with its own kernel (replicate borders)."""
    n = x.shape[0]
    k = kernels.to(x.device, x.dtype)
    y = F.pad(x.view(1, n, *x.shape[2:]), (radius,) * 4, mode="replicate")
    y = F.conv2d(y, k.view(n, 1, 1, -1), groups=n)
    y = F.conv2d(y, k.view(n, 1, -1, 1), groups=n)
    return y.view_as(x)


def _as_float(pixels: torch.Tensor) -> torch.Tensor:
    """uint16 -> float32 through int16 (torch's uint16 support is young; int16's is everywhere)."""
    return pixels.view(torch.int16).float().remainder_(65536)


def device_robust_range(images: torch.Tensor, sizes: torch.Tensor, samples: int = 65536) -> torch.Tensor:
    """[B, H, W] uint16 padded images, [B, 2] their sizes -> [B, 2] float64 (lo, hi) on the CPU: per image what
    catalog.pixels.robust_range gives (the same strided subsample, linear-interpolated percentiles)."""
    q = torch.tensor([0.005, 0.995, 0.0, 1.0], device=images.device)
    steps = [(h, w, max(1, int(math.sqrt(h * w / samples)))) for h, w in sizes.tolist()]
    found = torch.stack([torch.quantile(_as_float(img[:h:s, :w:s]).flatten(), q)
                         for img, (h, w, s) in zip(images, steps)]).tolist()  # one wait for the device per batch
    out = []
    for lo, hi, low, high in found:
        if hi <= lo:
            lo, hi = low, high
        out.append((lo, max(hi, lo + 1.0)))
    return torch.tensor(out, dtype=torch.float64)


def absolute_windows(params: torch.Tensor, ranges: torch.Tensor) -> torch.Tensor:
    """[B, C, P] plans with windows relative to [0, 1] -> the same plans with windows in each image's levels."""
    lo, span = ranges[:, :1], ranges[:, 1:] - ranges[:, :1]
    out = params.clone()
    out[..., WINDOW_LO] = lo + span * params[..., WINDOW_LO]
    out[..., WINDOW_HI] = lo + span * params[..., WINDOW_HI]
    return out


class DeviceCrops:
    """A CollatePlans batch -> the batch CollateCrops gives ({"keys", "global", "local", "masks"}), on `device`."""

    def __init__(self, crops: CropsConfig, mean: float, std: float, device: torch.device | str = "cpu"):
        self.c, self.mean, self.std, self.device = crops, float(mean), float(std), torch.device(device)
        self.decoder: BatchDecoder | None = None  # made on the first compressed batch

    def decoded(self, batch: dict) -> dict:
        """A compressed batch (CollatePlans of payload samples) -> the batch CollatePlans gives of decoded ones."""
        if self.decoder is None:
            self.decoder = BatchDecoder(self.device)
        images = self.decoder(batch["payloads"], batch["exts"])
        params = absolute_windows(batch["params"], device_robust_range(images, batch["sizes"]))
        rest = {k: v for k, v in batch.items() if k not in ("payloads", "exts", "relative_window")}
        return {**rest, "images": images, "params": params}

    def __call__(self, batch: dict) -> dict:
        if batch.get("relative_window"):
            batch = self.decoded(batch)
        params, seeds = batch["params"], batch["noise_seeds"].tolist()
        images = batch["images"].to(self.device, non_blocking=True)
        c = self.c
        groups = {"global": (params[:, :N_GLOBAL], c.global_size),  # [B, C, P] float64, on the CPU:
                  "local": (params[:, N_GLOBAL:], c.local_size)}   # per-crop decisions need no device sync
        noise = self._noise(groups, seeds)
        out = {"keys": batch["keys"], "masks": batch["masks"].to(self.device, non_blocking=True)}
        for name, (p, size) in groups.items():
            out[name] = self._group(images, p, size, noise[name]) if p.shape[1] else None
        return out

    def _group(self, images: torch.Tensor, p: torch.Tensor, size: int, noise: torch.Tensor | None) -> torch.Tensor:
        """[C*B, 1, S, S] crop-major: crop c of image b at c * B + b, as CollateCrops orders them."""
        b, n = p.shape[:2]
        x = self._resize(images, p, size).view(b * n, 1, size, size)
        q = p.to(self.device, torch.float32).reshape(b * n, -1).T[:, :, None, None, None]  # [P, N, 1, 1, 1]
        x = ((x - q[WINDOW_LO]) / (q[WINDOW_HI] - q[WINDOW_LO])).clamp_(0, 1)
        x = x.pow(q[GAMMA])
        sigma = p[..., BLUR_SIGMA].reshape(-1)
        if (sigma > 0).any():
            x = separable_blur(x, *blur_kernels(sigma))
        if noise is not None:
            x = (x + noise.view_as(x) * q[NOISE_STD]).clamp_(0, 1)
        x = (x - self.mean) / self.std
        return x.view(b, n, 1, size, size).transpose(0, 1).reshape(n * b, 1, size, size)

    def _resize(self, images: torch.Tensor, p: torch.Tensor, size: int) -> torch.Tensor:
        """[B, H, W] uint16 padded images, [B, C, P] plans -> [B, C, S, S] float32 resized crop boxes."""
        b, n = p.shape[:2]
        h, w = images.shape[1:]
        d = p.to(self.device)
        chunk = max(1, PIXEL_BUDGET // max(h * w, n * size * max(h, w)))
        flips = bool((p[..., FLIP] > 0).any())
        parts = []
        for i in range(0, b, chunk):
            k = min(b, i + chunk) - i
            box = d[i:i + k].reshape(k * n, -1)
            wy = resize_weights(box[:, TOP], box[:, HEIGHT], size, h)  # [k*C, S, H]
            wx = resize_weights(box[:, LEFT], box[:, WIDTH], size, w)  # [k*C, S, W]
            if flips:
                wx = torch.where(box[:, FLIP, None, None] > 0, wx.flip(1), wx)
            rows = torch.bmm(wy.view(k, n * size, h), _as_float(images[i:i + k]))  # [k, C*S, W]
            parts.append(torch.bmm(rows.view(k * n, size, w), wx.transpose(1, 2)).view(k, n, size, size))
        return torch.cat(parts)

    def _noise(self, groups: dict, seeds: list[int]) -> dict:
        """Per group [B, C, 1, S, S] or None: per image, the calls the loader path makes, in its order."""
        noisy = {name: bool((p[..., NOISE_STD] > 0).any()) for name, (p, _) in groups.items()}
        out = {name: torch.zeros(*p.shape[:2], 1, size, size, device=self.device) if noisy[name] else None
               for name, (p, size) in groups.items()}
        if not any(noisy.values()):
            return out
        for i, seed in enumerate(seeds):
            g = torch.Generator(device=self.device).manual_seed(seed)
            for name, (p, size) in groups.items():
                drawn = crop_noise(g, p[i], size, self.device)
                if drawn is not None:
                    out[name][i] = drawn
        return out
