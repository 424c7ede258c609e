"""PNG / JPEG / TIFF / BMP reader (public datasets). 8- and 16-bit grey kept exactly; colour
converted to grey. Text chunks and EXIF are never read."""

from __future__ import annotations

import io
import warnings
from typing import Iterator

import numpy as np
from PIL import Image, ImageSequence

from catalog import vocab
from catalog.deid import patient_identity, study_key
from catalog.pixel_budget import PixelsRefused, check_codestream, check_dimensions
from ingest.pixels import Frame, to_gray, to_storable
from ingest.reasons import Quarantine
from ingest.readers.context import ReadContext

Image.MAX_IMAGE_PIXELS = None  # as in catalog/pixels.py: our budget is checked first, with a reason code
_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "LA": 2, "La": 2, "PA": 2, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2,
                    "RGB": 3, "YCbCr": 3, "LAB": 3, "HSV": 3, "RGBA": 4, "RGBa": 4, "RGBX": 4, "CMYK": 4, "I": 4,
                    "F": 4}


def _array(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        return np.asarray(img, dtype=np.uint16)
    if mode in ("L", "I", "F"):
        return np.asarray(img)
    if mode == "1":
        return np.asarray(img.convert("L"))
    if mode in ("LA", "La"):
        return np.asarray(img.getchannel(0))
    if mode in ("RGB", "RGBA", "RGBa", "RGBX"):
        return to_gray(np.asarray(img)[..., :3])
    if mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
        return to_gray(np.asarray(img.convert("RGB")))
    raise Quarantine("unsupported_pixel_format", f"image mode {mode}")


def _opened(data: bytes, ctx: ReadContext) -> Image.Image:
    """The image with only its header read: the codestream's own declared size (PNG IHDR, JPEG SOF) checked against
    the budget first, then what Pillow will decode to (TIFF and BMP headers, and the same PNG or JPEG) again."""
    try:
        declared = check_codestream(data, limits=ctx.limits)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data))
    except PixelsRefused as e:
        raise Quarantine.refused(e) from None
    except Exception as e:
        raise Quarantine("decode_error", f"image header unreadable ({type(e).__name__})") from None
    w, h = img.size
    if declared is not None and (declared.rows, declared.cols) != (h, w):
        raise Quarantine("declared_size_mismatch", f"codestream {declared.rows}x{declared.cols}, decoder {h}x{w}")
    _check_size(img, 1, ctx)
    return img


def _check_size(img: Image.Image, pages: int, ctx: ReadContext) -> None:
    w, h = img.size
    try:
        check_dimensions(h, w, pages, _BYTES_PER_PIXEL.get(img.mode, 4), ctx.limits)
    except PixelsRefused as e:
        raise Quarantine.refused(e) from None


def read_raster(data: bytes, ctx: ReadContext, fmt: str) -> Iterator[Frame]:
    img = _opened(data, ctx)
    hints, pseudo = ctx.hints, ctx.pseudo
    patient_key, basis = patient_identity(pseudo, ctx.file_id, hints)
    base = {
        "format": fmt,
        "modality": ctx.defaults.get("modality"),
        "body_part": ctx.defaults.get("body_part") or "unknown",
        "laterality": vocab.laterality(hints.get("laterality")),
        "view": vocab.view(hints.get("view")),
        "patient_key": patient_key,
        "patient_key_basis": basis,
        "study_key": study_key(pseudo, hints),
        "source_split": vocab.split(hints.get("split")),
        "photometric": "MONOCHROME2",
    }
    try:
        for index, page in enumerate(ImageSequence.Iterator(img)):
            _check_size(page, index + 1, ctx)  # each page its own size; all of them together within the budget
            page.load()
            arr = _array(page)
            storable = to_storable(np.ascontiguousarray(arr), eight_bit_source=arr.dtype.itemsize == 1)
            attrs = dict(base, frame_index=index, bits_stored=8 * arr.dtype.itemsize,
                         intensity_scale=storable.scale, intensity_offset=storable.offset)
            yield Frame(storable.pixels, attrs)
    except Quarantine:
        raise
    except (OSError, SyntaxError, EOFError) as e:
        text = str(e).lower()
        reason = "truncated" if "truncat" in text or isinstance(e, EOFError) else "decode_error"
        raise Quarantine(reason, f"image data unreadable ({type(e).__name__})") from None
    except Exception as e:
        raise Quarantine("decode_error", f"image data unreadable ({type(e).__name__})") from None
