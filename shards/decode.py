"""Decoding a shard sample's PNG: a fast path for the store's own layout, Pillow for anything else.

`catalog.pixels.encode_png` writes one layout: greyscale, 8 or 16 bit, not interlaced, the "up" filter on every
scanline, no other chunks. For that layout ISA-L's inflate and a row-by-row add (the inverse of "up") decode in
about two thirds of Pillow's time at 1024 px and 16 bits, which is most of a loader worker's time when the crops
run on the GPU. Any other PNG (another writer's filters, an interlaced file) goes to `catalog.pixels.decode_png`;
both give the same array (tests/shards/test_resample.py).
"""

from __future__ import annotations

import struct

import numpy as np

from catalog.pixel_budget import check_dimensions
from catalog.pixels import decode_png

try:
    from isal.isal_zlib import decompressobj as _inflater
except ImportError:  # pragma: no cover
    from zlib import decompressobj as _inflater

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_UP = 2


def decode_payload(data: bytes) -> np.ndarray:
    """Exact decode of a stored PNG: uint16 for 16-bit, uint8 for 8-bit, [H, W]."""
    layout = _store_layout(data)
    if layout is None:
        return decode_png(data)
    width, height, depth, idat = layout
    check_dimensions(height, width, 1, depth // 8)  # the pixel budget, before anything is inflated
    stride = width * depth // 8
    raw = _inflated(idat, height * (stride + 1))
    if len(raw) != height * (stride + 1):
        return decode_png(data)  # let the reference decoder say what is wrong
    rows = np.frombuffer(raw, np.uint8).reshape(height, stride + 1)
    if not (rows[:, 0] == _UP).all():
        return decode_png(data)
    out = np.empty((height, stride), np.uint8)
    out[0] = rows[0, 1:]  # the row above the first is zero
    for y in range(1, height):
        np.add(out[y - 1], rows[y, 1:], out=out[y])  # uint8 arithmetic wraps, as PNG's does
    return out.view(">u2").astype(np.uint16) if depth == 16 else out


def _inflated(idat: bytes, size: int) -> bytes:
    """At most one byte more than the IHDR's size (a stream that inflates further is a bomb, not our layout)."""
    return _inflater().decompress(idat, size + 1)


def _store_layout(data: bytes) -> tuple[int, int, int, bytes] | None:
    """(width, height, bit depth, compressed image data) when the file has encode_png's layout, else None."""
    if not data.startswith(_SIGNATURE):
        return None
    pos, header, idat = len(_SIGNATURE), None, []
    while pos + 12 <= len(data):
        (length,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        else:
            return None  # a chunk encode_png never writes: not our layout
    if header is None or not idat:
        return None
    width, height, depth, colour, compression, filtering, interlace = header
    if depth not in (8, 16) or (colour, compression, filtering, interlace) != (0, 0, 0, 0):
        return None
    return width, height, depth, b"".join(idat)
