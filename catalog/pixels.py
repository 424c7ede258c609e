"""The stored-pixel format: a lossless greyscale PNG at the image's depth, addressed by `image_id` (a hash of the
pixels); and the robust intensity window every stage shows an image through.

Ingest writes these PNGs, the store keeps them, shards carry their bytes as they are, and training, evaluation and
curation decode them: one codec, here.
"""

from __future__ import annotations

import hashlib
import io
import math
import struct
import zlib

import numpy as np
from PIL import Image

from catalog.pixel_budget import Limits, PixelsRefused, check_codestream

# Pillow's own bomb limit refuses a 16000 x 16000 image that is within our budget, and only after a warning;
# every decode here checks the declared size against our budget first (catalog/pixel_budget.py)
Image.MAX_IMAGE_PIXELS = None

try:  # ISA-L's deflate: zlib-compatible streams, ~3.5x faster than zlib at the same size
    from isal.isal_zlib import compress as _deflate
except ImportError:  # pragma: no cover
    from zlib import compress as _deflate


def image_id(pixels: np.ndarray) -> str:
    """Content address: 128-bit BLAKE2b of dtype, shape and the pixel bytes (hex, no dots)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{pixels.dtype.str}|{pixels.shape[0]}x{pixels.shape[1]}|".encode())
    h.update(np.ascontiguousarray(pixels).data)
    return h.hexdigest()


def encode_png(pixels: np.ndarray, compress_level: int = 1) -> bytes:
    """Lossless greyscale PNG at the array's depth, written directly: the "up" filter in numpy and
    one ISA-L deflate call are ~7x faster than Pillow's encoder at the same size. No text or time
    chunks. compress_level is ISA-L's 0-3 (zlib's 0-9 when ISA-L is absent)."""
    if pixels.ndim != 2 or pixels.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"cannot store {pixels.dtype} {pixels.shape}")
    h, w = pixels.shape
    raw = np.ascontiguousarray(pixels.astype(">u2", copy=False) if pixels.dtype == np.uint16 else pixels)
    rows = raw.view(np.uint8).reshape(h, -1)
    filtered = np.empty((h, rows.shape[1] + 1), np.uint8)
    filtered[:, 0] = 2  # filter type "up" on every scanline
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])
    ihdr = struct.pack(">IIBBBBB", w, h, 8 * pixels.dtype.itemsize, 0, 0, 0, 0)
    return b"".join((_PNG_SIGNATURE, _chunk(b"IHDR", ihdr), _chunk(b"IDAT", _deflate(filtered.data, compress_level)),
                     _chunk(b"IEND", b"")))


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def decode_png(data: bytes, rows: int | None = None, cols: int | None = None, limits: Limits | None = None) -> np.ndarray:
    """Exact decode of a stored PNG: 16-bit stays 16-bit (unlike webdataset's default decoders). The IHDR's size is
    checked against `rows` x `cols` (the catalog's, when given) and the pixel budget before anything is decoded;
    raises PixelsRefused with a reason."""
    declared = check_codestream(data, rows, cols, limits)
    if declared is None or declared.codec != "png":
        raise PixelsRefused("decode_error", "not a PNG")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            # np.array, not np.asarray: a writable array that torch can wrap without a copy warning
            if img.mode in ("I;16", "I;16B", "I;16L"):
                return np.array(img, dtype=np.uint16)
            if img.mode == "I":
                return np.array(img).astype(np.uint16)
            if img.mode == "L":
                return np.array(img, dtype=np.uint8)
    except (OSError, SyntaxError, EOFError, ValueError, struct.error, zlib.error) as e:
        truncated = isinstance(e, EOFError) or "truncat" in str(e).lower()
        raise PixelsRefused("truncated" if truncated else "decode_error", type(e).__name__) from None
    raise PixelsRefused("decode_error", "unexpected stored PNG mode")


def sampled_percentiles(image: np.ndarray, q, samples: int = 65536) -> np.ndarray:
    """Percentiles `q` (float32) of a strided subsample of about `samples` pixels: fast on large radiographs."""
    step = max(1, int(math.sqrt(image.size / samples)))
    return np.percentile(image[::step, ::step].astype(np.float32, copy=False), q)


def robust_range(image: np.ndarray) -> tuple[float, float]:
    """The 0.5th..99.5th percentile window (the sample's whole range when that is flat), at least 1 wide."""
    lo, hi = sampled_percentiles(image, [0.5, 99.5])
    if hi <= lo:
        lo, hi = (float(v) for v in sampled_percentiles(image, [0, 100]))
    return float(lo), float(max(hi, lo + 1.0))
