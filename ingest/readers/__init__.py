"""Format detection by content (magic bytes), then the reader for that format.

The extension is a claim, the content is the truth: a file whose extension names one format
family and whose bytes are another is quarantined (`extension_mismatch`); files without a known
extension (DICOM exports often have none) are read by their content.
"""

from __future__ import annotations

from typing import Callable, Iterator

from ingest.pixels import Frame
from ingest.reasons import Quarantine
from ingest.readers.context import Limits, ReadContext
from ingest.readers.dicom import read_dicom
from ingest.readers.nifti import read_nifti
from ingest.readers.raster import read_raster

__all__ = ["Limits", "ReadContext", "detect_format", "read_frames", "READERS"]

_EXTENSION_FAMILY = {
    ".dcm": "dicom", ".dicom": "dicom", ".ima": "dicom",
    ".nii": "nifti", ".nii.gz": "nifti",
    ".png": "raster", ".jpg": "raster", ".jpeg": "raster", ".tif": "raster", ".tiff": "raster", ".bmp": "raster",
}
_FAMILY = {"dicom": "dicom", "nifti": "nifti", "png": "raster", "jpeg": "raster", "tiff": "raster", "bmp": "raster"}


def claimed_family(name: str) -> str | None:
    lower = name.lower()
    if lower.endswith(".nii.gz"):
        return "nifti"
    dot = lower.rfind(".")
    return _EXTENSION_FAMILY.get(lower[dot:]) if dot >= 0 else None


def detect_format(data: bytes, name: str) -> str | None:
    head = data[:1024]
    if len(data) >= 132 and data[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head.startswith(b"BM") and len(data) > 26:
        return "bmp"
    if head.startswith(b"\x1f\x8b"):
        return "nifti" if name.lower().endswith(".nii.gz") else None
    if len(data) >= 348 and (data[344:347] in (b"n+1", b"ni1") or data[4:7] == b"n+2"):
        return "nifti"
    if claimed_family(name) == "dicom" or claimed_family(name) is None:
        # A raw DICOM dataset (no preamble): group 0002 or 0008 little-endian first tag.
        if head[:2] in (b"\x02\x00", b"\x08\x00") and len(data) > 8:
            return "dicom"
        if claimed_family(name) == "dicom":
            return "dicom"  # let the DICOM parser decide and give the precise reason
    return None


def _read_raster(fmt: str) -> Callable[[bytes, ReadContext], Iterator[Frame]]:
    return lambda data, ctx: read_raster(data, ctx, fmt)


READERS: dict[str, Callable[[bytes, ReadContext], Iterator[Frame]]] = {
    "dicom": read_dicom,
    "nifti": read_nifti,
    "png": _read_raster("png"),
    "jpeg": _read_raster("jpeg"),
    "tiff": _read_raster("tiff"),
    "bmp": _read_raster("bmp"),
}


def read_frames(data: bytes, name: str, ctx: ReadContext) -> tuple[str, Iterator[Frame]]:
    if not data:
        raise Quarantine("empty_file", "0 bytes")
    fmt = detect_format(data, name)
    claimed = claimed_family(name)
    if fmt is None:
        raise Quarantine("unrecognized_format", f"{len(data)} bytes, no known signature")
    if claimed is not None and claimed != _FAMILY[fmt]:
        raise Quarantine("extension_mismatch", f"extension says {claimed}, content is {fmt}")
    return fmt, READERS[fmt](data, ctx)
