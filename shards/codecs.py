"""Shard payload codecs: the one place that knows how a sample's pixels are encoded, by tar member extension.

Two lossless codecs, both keeping the image's depth (8 or 16 bit) and both bit-exact:

  png    `<key>.png`: the store's own 16/8-bit PNG (catalog/pixels.py), carried as it is;
  htj2k  `<key>.j2c`: High-Throughput JPEG 2000 (ISO/IEC 15444-15), a raw reversible codestream written by OpenJPH
         through imagecodecs. `.j2c` because it is a bare codestream (`.jph` names Part 15's boxed file format);
         any JPEG 2000 decoder with HT support reads it (OpenJPH, OpenJPEG >= 2.5, Kakadu, NVIDIA nvJPEG2000).

A set's codec is recorded in its manifest with the encoder's name and version; the reader and `verify` go by the
extension each sample carries. Which codec is the default, and why: docs/benchmarks.md ("HTJ2K payloads (issue 29)").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from catalog.errors import OrthoError
from catalog.pixel_budget import check_codestream
from shards.decode import decode_payload as decode_png_payload

DEFAULT_CODEC = "png"  # measured: docs/benchmarks.md, "HTJ2K payloads (issue 29)"


class CodecError(OrthoError, ValueError):
    pass


def _encode_png(pixels: np.ndarray) -> bytes:
    from catalog.pixels import encode_png

    return encode_png(pixels)


def _decode_png_strictly(data: bytes) -> np.ndarray:
    from catalog.pixels import decode_png

    return decode_png(data)  # Pillow's decoder: it also checks every chunk's CRC, which the fast path skips


def _encode_htj2k(pixels: np.ndarray) -> bytes:
    import imagecodecs

    if pixels.ndim != 2 or pixels.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"cannot encode {pixels.dtype} {pixels.shape}")
    return imagecodecs.htj2k_encode(np.ascontiguousarray(pixels), reversible=True)


def _decode_htj2k(data: bytes) -> np.ndarray:
    import imagecodecs

    check_codestream(data)  # the SIZ's size against the pixel budget before the decoder allocates for it
    out = imagecodecs.htj2k_decode(data)
    if out.ndim != 2 or out.dtype not in (np.uint8, np.uint16):
        raise CodecError(f"HTJ2K payload decodes to {out.dtype} {out.shape}, not one grey plane")
    return out


def _png_encoder() -> str:
    try:
        import isal

        return f"catalog.pixels.encode_png (isal {isal.__version__} deflate)"
    except ImportError:  # pragma: no cover
        import zlib

        return f"catalog.pixels.encode_png (zlib {zlib.ZLIB_VERSION})"


def _htj2k_encoder() -> str:
    import imagecodecs

    return f"{imagecodecs.htj2k_version()} (imagecodecs {imagecodecs.__version__}), reversible"


@dataclass(frozen=True)
class Codec:
    name: str
    ext: str
    encode: Callable[[np.ndarray], bytes]
    decode: Callable[[bytes], np.ndarray]
    encoder: Callable[[], str]
    check: Callable[[bytes], np.ndarray]  # the decoder `ortho shards verify` uses: the strictest there is

    def describe(self) -> dict:
        """What a manifest records: {"name", "ext", "encoder"} (the encoder with its version)."""
        return {"name": self.name, "ext": self.ext, "encoder": self.encoder()}


CODECS = {c.name: c for c in (
    Codec("png", "png", _encode_png, decode_png_payload, _png_encoder, _decode_png_strictly),
    Codec("htj2k", "j2c", _encode_htj2k, _decode_htj2k, _htj2k_encoder, _decode_htj2k),
)}
BY_EXT = {c.ext: c for c in CODECS.values()}


def get_codec(name: str | None) -> Codec:
    """The codec called `name` (None: the default); a CodecError naming the choices otherwise."""
    codec = CODECS.get(name or DEFAULT_CODEC)
    if codec is None:
        raise CodecError(f"unknown codec {name!r}: use one of {', '.join(CODECS)}")
    return codec


def payload(sample: dict) -> tuple[Codec, bytes]:
    """The payload codec and bytes of a raw sample dict {"__key__", "<ext>": bytes, ...}."""
    for ext, codec in BY_EXT.items():
        if ext in sample:
            return codec, sample[ext]
    raise CodecError(f"sample {sample.get('__key__')} has no image payload ({', '.join(BY_EXT)})")


def decode_sample_pixels(sample: dict) -> np.ndarray:
    """Exact decode of a raw sample's payload: uint16 for 16-bit, uint8 for 8-bit, [H, W]."""
    codec, data = payload(sample)
    return codec.decode(data)


def payload_shape(ext: str, data: bytes) -> tuple[int, int]:
    """(rows, cols) read from the payload's header, without decoding the pixels, and checked against the pixel budget
    (catalog/pixel_budget.py): the device decoder allocates what this says. PixelsRefused (a ValueError) otherwise."""
    declared = check_codestream(data)
    if declared is None or declared.codec != _HEADER_CODEC.get(ext):
        raise CodecError(f"cannot read the size of a .{ext} payload")
    return declared.rows, declared.cols


_HEADER_CODEC = {"png": "png", "j2c": "j2k"}  # payload extension -> catalog/codestreams.py's name for its header
