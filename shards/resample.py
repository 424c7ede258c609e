"""The resolution policy of a shard set: an image whose longer side exceeds `max_side` is reduced once, at build.

The store keeps every image at full size; a shard set built with `max_side` carries a copy reduced with an
antialiased (triangle, as torchvision's `antialias=True` bilinear) filter, rounded back to the image's own depth:
16-bit stays 16-bit. Every sample of such a set records its original size and the factor, and its `rows`, `cols`
and pixel spacing describe the pixels it carries. Why a default of 1024: docs/training.md ("Resolution").
"""

from __future__ import annotations

import numpy as np

DEFAULT_MAX_SIDE = 1024  # measured by bench/loader.py: docs/benchmarks.md, "Loader (issue 17)"
FILTER = "triangle-antialias"


def reduced_size(rows: int, cols: int, max_side: int) -> tuple[int, int]:
    """The size an image of rows x cols gets in a set with `max_side` (unchanged when it already fits)."""
    longest = max(rows, cols)
    if longest <= max_side:
        return rows, cols
    factor = max_side / longest
    return max(1, round(rows * factor)), max(1, round(cols * factor))


def fit_max_side(pixels: np.ndarray, max_side: int) -> np.ndarray:
    """[H, W] uint8/uint16 -> the same dtype, longer side at most `max_side`; the array itself when it fits."""
    size = reduced_size(*pixels.shape, max_side)
    if size == pixels.shape:
        return pixels
    import torch  # here, not at the top: the command line reads DEFAULT_MAX_SIDE without loading torch
    import torch.nn.functional as F

    with torch.no_grad():
        x = torch.from_numpy(pixels.astype(np.float32))[None, None]
        y = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)[0, 0]
        y = y.round_().clamp_(0, float(np.iinfo(pixels.dtype).max))
    return y.numpy().astype(pixels.dtype)


def resampled_meta(rec: dict, rows: int, cols: int) -> dict:
    """A sample's metadata for pixels of rows x cols made from the catalog's image `rec` describes."""
    out = dict(rec)
    orig_rows, orig_cols = rec["rows"], rec["cols"]
    out.update(rows=rows, cols=cols, original_rows=orig_rows, original_cols=orig_cols,
               resample_factor=max(rows, cols) / max(orig_rows, orig_cols))
    for key, before, after in (("pixel_spacing_row", orig_rows, rows), ("pixel_spacing_col", orig_cols, cols)):
        if out.get(key) is not None and before != after:
            out[key] = float(out[key]) * before / after  # the same anatomy over fewer pixels
    return out
