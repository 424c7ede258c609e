"""Pixel normalisation: any decoded frame -> a 2D uint8/uint16 array plus the affine that maps it
back to real values (real = stored * intensity_scale + intensity_offset).

Integer data is kept exactly (shifted to be non-negative); only data that cannot fit 16 bits
(floats, 32-bit ranges) is quantised to 16 bits, and the mapping is recorded. The stored format itself (PNG codec,
image_id) is the ground floor's: catalog/pixels.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ingest.reasons import Quarantine


@dataclass
class Frame:
    """One de-identified 2D image as a reader yields it."""

    pixels: np.ndarray  # 2D uint8 or uint16
    attrs: dict = field(default_factory=dict)  # catalog columns, allow-listed values only


@dataclass(frozen=True)
class Storable:
    pixels: np.ndarray
    scale: float
    offset: float


def to_gray(arr: np.ndarray) -> np.ndarray:
    """(H, W, C) -> (H, W): an exact channel when the colour is really grey, else Rec. 601 luma."""
    if arr.ndim == 2:
        return arr
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise Quarantine("unsupported_pixel_format", f"array shape {arr.shape}")
    rgb = arr[..., :3]
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]):
        return np.ascontiguousarray(rgb[..., 0])
    luma = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    return np.rint(luma).astype(arr.dtype)


def to_storable(
    raw: np.ndarray,
    slope: float = 1.0,
    intercept: float = 0.0,
    eight_bit_source: bool | None = None,
) -> Storable:
    """Shift integers to unsigned at their source depth; quantise floats to 16 bits."""
    if raw.ndim != 2:
        raise Quarantine("unsupported_pixel_format", f"expected a 2D frame, got shape {raw.shape}")
    if eight_bit_source is None:
        eight_bit_source = raw.dtype.itemsize == 1
    if raw.dtype.kind in "ui":
        lo = int(raw.min()) if raw.size else 0
        hi = int(raw.max()) if raw.size else 0
        lo = min(lo, 0)
        span = hi - lo
        if span <= (255 if eight_bit_source else 65535):
            dtype = np.uint8 if eight_bit_source else np.uint16
            stored = (raw.astype(np.int64) - lo).astype(dtype) if lo else raw.astype(dtype, copy=False)
            return Storable(np.ascontiguousarray(stored), float(slope), float(intercept + lo * slope))
        real = raw.astype(np.float64)
    elif raw.dtype.kind == "f":
        real = raw.astype(np.float64)
    elif raw.dtype.kind == "b":
        return Storable(raw.astype(np.uint8), float(slope), float(intercept))
    else:
        raise Quarantine("unsupported_pixel_format", f"pixel type {raw.dtype}")
    finite = np.isfinite(real)
    if not finite.any():
        raise Quarantine("unsupported_pixel_format", "no finite pixel values")
    lo_f, hi_f = float(real[finite].min()), float(real[finite].max())
    step = (hi_f - lo_f) / 65535 if hi_f > lo_f else 1.0
    q = np.where(finite, np.rint((real - lo_f) / step), 0).clip(0, 65535).astype(np.uint16)
    return Storable(np.ascontiguousarray(q), float(step * slope), float(intercept + lo_f * slope))
