"""DICOM reader: decode every frame, keep only allow-listed attributes, pseudonymise identity.

Nothing from the header is copied as text: identifiers become keyed pseudonyms, dates are
shifted per patient, descriptions are reduced to vocabulary terms (catalog/vocab.py), and every
other element, private tags and nested sequences included, is simply never read.
"""

from __future__ import annotations

import io
import logging
import warnings
from typing import Iterator

import numpy as np
import pydicom
from pydicom.encaps import generate_fragments
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, get_decoder, iter_pixels
from pydicom.uid import UID_dictionary

from catalog import vocab
from catalog.pixel_budget import PixelsRefused, check_codestream, check_dimensions
from catalog.deid import DATE_KEYWORDS, HEADER_FIELDS, age_days, declares_burned_in, patient_identity, study_key
from ingest.pixels import Frame, to_gray, to_storable
from ingest.reasons import Quarantine
from ingest.readers.context import ReadContext

# pydicom logs decoder failures with tracebacks and, for some, element values; the reader reports
# every failure itself as a quarantine reason, so pydicom's own log stays silent.
logging.getLogger("pydicom").setLevel(logging.CRITICAL + 1)

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
# Storage classes that carry no pixels: recognised and recorded, never decoded.
_NON_IMAGE_WORDS = ("SR Storage", "Presentation State", "Key Object", "Structured Report", "Waveform",
                    "RT Structure", "RT Plan", "Raw Data", "Spectroscopy", "Encapsulated", "Registration",
                    "Segmentation", "Measurement", "Dose SR", "Media Storage Directory", "Document")


def _get(ds, keyword, default=None):
    try:
        value = ds.get(keyword, default)
    except Exception:  # a malformed value (bad DS/IS, bad charset) reads as absent
        return default
    return default if value is None or value == "" else value


def _float(value) -> float | None:
    try:
        if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
            value = value[0]
        f = float(value)
        return f if np.isfinite(f) else None
    except Exception:
        return None


def _floats(value, n: int) -> list[float] | None:
    try:
        out = [float(v) for v in value][:n]
        return out if len(out) == n and all(np.isfinite(out)) else None
    except Exception:
        return None


def _int(value) -> int | None:
    try:
        return int(value)
    except Exception:
        return None


def sop_class_name(ds) -> str | None:
    uid = str(_get(ds, "SOPClassUID", "") or "")
    entry = UID_dictionary.get(uid)
    return entry[0] if entry else ("unknown" if uid else None)


def parse(data: bytes) -> pydicom.Dataset:
    try:
        return _dcmread(data, force=False)
    except InvalidDicomError:
        pass  # no preamble: a raw dataset, or not DICOM at all
    ds = _dcmread(data, force=True)
    if not any(k in ds for k in ("SOPClassUID", "Rows", "PixelData", "StudyInstanceUID", "Modality")):
        raise Quarantine("invalid_dicom", "no DICOM preamble and no recognisable elements")
    return ds


def _dcmread(data: bytes, force: bool) -> pydicom.Dataset:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(data), force=force)
            ds.keys()  # materialise the top level so truncation shows here
            return ds
    except InvalidDicomError:
        raise
    except RecursionError:
        raise Quarantine("invalid_dicom", "sequences nested too deeply") from None
    except (EOFError, OSError) as e:
        raise Quarantine("truncated", f"header ends early ({type(e).__name__})") from None
    except Exception as e:
        raise Quarantine("invalid_dicom", f"header parse failed ({type(e).__name__})") from None


def _functional(ds, frame: int, seq_kw: str, attr_kw: str):
    """A per-frame value of an enhanced multi-frame object, falling back to the shared group."""
    for groups_kw, index in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        groups = _get(ds, groups_kw)
        try:
            seq = groups[index].get(seq_kw) if groups is not None and len(groups) > index else None
            if seq:
                value = _get(seq[0], attr_kw)
                if value is not None:
                    return value
        except Exception:
            continue
    return _get(ds, attr_kw)


def _ensure_transfer_syntax(ds) -> None:
    """Files without (0002,0010) are common in old exports: infer it from how the body was encoded."""
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return
    if meta is None:
        ds.file_meta = meta = pydicom.dataset.FileMetaDataset()
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if implicit is None:
        raise Quarantine("unsupported_transfer_syntax", "no transfer syntax and unknown encoding")
    if "PixelData" in ds and ds["PixelData"].is_undefined_length:
        raise Quarantine("unsupported_transfer_syntax", "compressed pixel data without a transfer syntax")
    meta.TransferSyntaxUID = (pydicom.uid.ImplicitVRLittleEndian if implicit else
                              pydicom.uid.ExplicitVRLittleEndian if little else pydicom.uid.ExplicitVRBigEndian)


def _check_pixels(ds, ctx: ReadContext) -> tuple[int, int, int]:
    rows, cols = _int(_get(ds, "Rows")), _int(_get(ds, "Columns"))
    if rows is None or cols is None:
        raise Quarantine("invalid_dicom", "pixel data without Rows or Columns")
    frames = _int(_get(ds, "NumberOfFrames", 1)) or 1
    spp = _int(_get(ds, "SamplesPerPixel", 1)) or 1
    bits = _int(_get(ds, "BitsAllocated", 16)) or 16
    try:
        check_dimensions(rows, cols, frames, spp * ((max(bits, 8) + 7) // 8), ctx.limits)
    except PixelsRefused as e:
        raise Quarantine.refused(e) from None
    tsyntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if tsyntax is not None and not tsyntax.is_compressed:
        have = len(ds["PixelData"].value or b"") if "PixelData" in ds else None
        need = (rows * cols * frames * spp * bits + 7) // 8
        if have is not None and have < need:
            raise Quarantine("truncated", f"pixel data is {have} bytes, header declares {need}")
    elif tsyntax is not None:
        try:
            decoder = get_decoder(tsyntax)
        except Exception:
            decoder = None
        if decoder is None or not decoder.is_available:
            raise Quarantine("unsupported_transfer_syntax", f"no decoder for {tsyntax.name or 'a private syntax'}")
        _check_codestreams(ds, rows, cols, ctx)
    return rows, cols, frames


def _check_codestreams(ds, rows: int, cols: int, ctx: ReadContext) -> None:
    """Each frame's codestream declares its own size, and that is what its decoder allocates: it must be the
    header's, within the budget, before any frame is decoded. RLE fragments carry no size (the header's is used)."""
    try:
        for fragment in generate_fragments(ds["PixelData"].value):
            check_codestream(fragment, rows, cols, ctx.limits)
    except PixelsRefused as e:
        raise Quarantine.refused(e) from None
    except Exception as e:  # an item structure pydicom cannot follow: its decoder would fail the same way
        raise Quarantine("decode_error", f"encapsulated pixel data unreadable ({type(e).__name__})") from None


def _header_attrs(ds, ctx: ReadContext) -> dict:
    """Everything the catalog keeps from one header, already de-identified."""
    texts = [_get(ds, k) for k in ("SeriesDescription", "ProtocolName", "StudyDescription")]
    hints = ctx.hints
    patient_key, basis = patient_identity(ctx.pseudo, ctx.file_id, hints, {k: _get(ds, k) for k in HEADER_FIELDS})
    study_uid, series_uid = _get(ds, "StudyInstanceUID"), _get(ds, "SeriesInstanceUID")
    date = next((d for d in (_get(ds, k) for k in DATE_KEYWORDS) if d), None)
    family, fat = vocab.sequence(*texts, _get(ds, "SequenceName"), _get(ds, "ScanningSequence"))
    if "FS" in vocab.tokens(_get(ds, "ScanOptions")):
        fat = True
    modality = vocab.modality(_get(ds, "Modality")) or ctx.defaults.get("modality")
    return {
        "modality": modality,
        "body_part": vocab.body_part(_get(ds, "BodyPartExamined"), *texts)
        or ctx.defaults.get("body_part") or "unknown",
        "laterality": vocab.laterality(hints.get("laterality"))
        or vocab.laterality(_get(ds, "ImageLaterality"))
        or vocab.laterality(_get(ds, "Laterality"))
        or vocab.laterality_from_text(*texts),
        "view": vocab.view(_get(ds, "ViewPosition")) or vocab.view(*texts),
        "sequence_family": family if modality == "MR" else None,
        "fat_suppressed": fat if modality == "MR" else None,
        "manufacturer": vocab.manufacturer(_get(ds, "Manufacturer")),
        "model_family": vocab.model_family(_get(ds, "ManufacturerModelName")),
        "sop_class": sop_class_name(ds),
        "image_kind": vocab.image_kind(_get(ds, "ImageType"), *texts),
        "photometric": vocab.photometric(_get(ds, "PhotometricInterpretation")),
        "patient_key": patient_key,
        "patient_key_basis": basis,
        "study_key": study_key(ctx.pseudo, hints, study_uid),
        "series_key": ctx.pseudo.series(series_uid) if series_uid else None,
        "source_split": vocab.split(hints.get("split")),
        "instance_number": _int(_get(ds, "InstanceNumber")),
        "bits_stored": _int(_get(ds, "BitsStored")),
        "slice_thickness": _float(_get(ds, "SliceThickness")),
        "echo_time": _float(_get(ds, "EchoTime")),
        "repetition_time": _float(_get(ds, "RepetitionTime")),
        "field_strength": _float(_get(ds, "MagneticFieldStrength")),
        "study_date": ctx.pseudo.shifted_date(date, patient_key),
        "patient_age_days": age_days(date, _get(ds, "PatientBirthDate"), _get(ds, "PatientAge")),
    }


def _geometry(ds, frame: int) -> dict:
    spacing = _floats(_functional(ds, frame, "PixelMeasuresSequence", "PixelSpacing") or _get(ds, "ImagerPixelSpacing") or [], 2)
    iop = _floats(_functional(ds, frame, "PlaneOrientationSequence", "ImageOrientationPatient") or [], 6)
    ipp = _floats(_functional(ds, frame, "PlanePositionSequence", "ImagePositionPatient") or [], 3)
    out = {"pixel_spacing_row": spacing[0] if spacing else None, "pixel_spacing_col": spacing[1] if spacing else None,
           "plane": None, "slice_position": None}
    if iop:
        normal = np.cross(iop[:3], iop[3:])
        axis = int(np.argmax(np.abs(normal)))
        out["plane"] = ("sagittal", "coronal", "axial")[axis] if abs(normal[axis]) >= 0.8 else "oblique"
        if ipp:
            out["slice_position"] = float(np.dot(ipp, normal))
    thickness = _float(_functional(ds, frame, "PixelMeasuresSequence", "SliceThickness"))
    if thickness is not None:
        out["slice_thickness"] = thickness
    return out


def read_dicom(data: bytes, ctx: ReadContext) -> Iterator[Frame]:
    # pydicom's warnings quote element values (a malformed date, a name): never let them out.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds, header = _prepare(data, ctx)
    yield from _frames(ds, header)


def _prepare(data: bytes, ctx: ReadContext):
    ds = parse(data)
    if not any(k in ds for k in _PIXEL_KEYWORDS):
        name = sop_class_name(ds) or ""
        if any(w in name for w in _NON_IMAGE_WORDS) or vocab.modality(_get(ds, "Modality")) in {"SR", "PR", "KO", "DOC", "REG", "RTSTRUCT", "RTPLAN"}:
            raise Quarantine("non_image_object", f"SOP class {name or 'unknown'}")
        raise Quarantine("no_pixel_data", f"SOP class {name or 'unknown'} without pixel data")
    _ensure_transfer_syntax(ds)
    _check_pixels(ds, ctx)
    header = _header_attrs(ds, ctx)
    # screened like every image at ingest (ingest/text/screen.py); the policy decides what a YES means
    header["burned_in_declared"] = declares_burned_in(_get(ds, "BurnedInAnnotation"))
    return ds, header


def _frames(ds, header: dict) -> Iterator[Frame]:
    photometric = header["photometric"] or "MONOCHROME2"
    bits_stored = header["bits_stored"] or _int(_get(ds, "BitsAllocated")) or 16
    signed = _int(_get(ds, "PixelRepresentation", 0)) == 1
    eight_bit = (_int(_get(ds, "BitsAllocated", 16)) or 16) <= 8
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for index, arr in enumerate(iter_pixels(ds)):
                yield _frame(ds, arr, index, header, photometric, bits_stored, signed, eight_bit)
    except Quarantine:
        raise
    except (EOFError, ValueError) as e:
        if "truncat" in str(e).lower() or "end of" in str(e).lower() or isinstance(e, EOFError):
            raise Quarantine("truncated", f"pixel data ends early ({type(e).__name__})") from None
        raise Quarantine("decode_error", f"pixel decode failed ({type(e).__name__})") from None
    except MemoryError:
        raise Quarantine("too_large", "decoded pixels do not fit in memory") from None
    except Exception as e:
        raise Quarantine("decode_error", f"pixel decode failed ({type(e).__name__})") from None


def _frame(ds, arr: np.ndarray, index: int, header: dict, photometric: str, bits_stored: int,
           signed: bool, eight_bit: bool) -> Frame:
    if photometric == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
        if arr.dtype.itemsize == 2 and eight_bit:
            arr = (arr >> 8).astype(np.uint8)  # 8-bit indices into 16-bit LUT entries
    arr = to_gray(arr) if arr.ndim == 3 else arr
    slope = _float(_functional(ds, index, "PixelValueTransformationSequence", "RescaleSlope")) or 1.0
    intercept = _float(_functional(ds, index, "PixelValueTransformationSequence", "RescaleIntercept")) or 0.0
    wc = _float(_functional(ds, index, "FrameVOILUTSequence", "WindowCenter"))
    ww = _float(_functional(ds, index, "FrameVOILUTSequence", "WindowWidth"))
    if photometric == "MONOCHROME1" and arr.dtype.kind in "ui":
        # Invert once, here: stored = full-scale - value, so that bright always means dense.
        full = (1 << (bits_stored - 1)) - 1 if signed else (1 << min(bits_stored, 8 * arr.dtype.itemsize)) - 1
        low = -(1 << (bits_stored - 1)) if signed else 0
        arr = (full + low - arr.astype(np.int64))
        if wc is not None:
            wc = (full + low) * slope + 2 * intercept - wc
    storable = to_storable(arr, slope, intercept, eight_bit_source=eight_bit)
    attrs = dict(header)
    attrs.update(_geometry(ds, index))
    attrs.update(
        frame_index=index,
        photometric=header["photometric"],
        intensity_scale=storable.scale,
        intensity_offset=storable.offset,
        window_center=wc,
        window_width=ww,
        format="dicom",
    )
    return Frame(storable.pixels, attrs)
