"""De-identified DICOM export (DICOM PS3.15 Annex E, Basic Application Level Confidentiality Profile).

The profile lists identifying attributes and an action for each (table E.1-1: D dummy, Z empty,
X remove, K keep, C clean, U consistent UID). This exporter is stricter than the table in one
documented way: it keeps only attributes known to be safe (`KEEP`: geometry, acquisition parameters,
coded content) and removes everything else, so an attribute the table lists and this file forgets
can only be removed, never leak. Private tags are removed. Then (each rule from catalog/deid.py, which the
readers follow too):
  U  every UID, at any depth, is replaced by 2.25.<HMAC of the original> (same input, same output)
  D  Patient's Name and Patient ID become the catalog's patient pseudonym; Study ID, Accession Number
     and the Patient/Study/Series attributes the IODs require (Type 1/2) get dummy or empty values
  options "Retain Longitudinal Temporal Information with Modified Dates" (dates shifted by the
     catalog's offset of that patient; times removed) and "Retain Patient Characteristics"
     (sex, age, size, weight)
The pixels are the catalog's, read from the store (after burned-in text was masked at ingest), never
the source file's; the pixel module is written for them. "Clean Pixel Data" (113101) and
BurnedInAnnotation = NO are claimed only for files whose every frame was screened for text.
PatientIdentityRemoved = YES; DeidentificationMethodCodeSequence lists the CID 7050 codes applied.
Unscreened objects that declare burned-in annotation are not exported unless allowed.
"""

from __future__ import annotations

import io
import itertools
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian
from pydicom.valuerep import DSfloat

from catalog import vocab
from catalog.files import atomic_path, read_bytes
from catalog.ids import new_run_id
from catalog.pixel_budget import PixelsRefused
from catalog.deid import DATE_KEYWORDS, Pseudonymizer, capped_age_string, declares_burned_in
from catalog.store import ImageStore
from catalog.text_screening import claims_clean_sql
from catalog.unreadable import Unreadable

# Attributes that carry no identity: kept as they are (K), inside sequences too. The pixel module
# (rows, depth, photometric, rescale, window, frames, pixel data) is not here: it is written anew for
# the stored pixels, and attributes that described the source's pixels (palettes, VOI LUTs, padding
# and extreme values, per-frame rescale and window sequences) no longer apply and are dropped.
KEEP = {
    # SOP common, general image and series descriptors that are coded, not free text
    "SOPClassUID", "SOPInstanceUID", "SpecificCharacterSet", "ImageType", "Modality", "InstanceNumber",
    "SeriesNumber", "AcquisitionNumber", "BodyPartExamined", "Laterality", "ImageLaterality", "ViewPosition",
    "PatientOrientation", "PresentationIntentType", "RecognizableVisualFeatures",
    "LossyImageCompression", "LossyImageCompressionRatio", "LossyImageCompressionMethod", "StudyInstanceUID",
    "SeriesInstanceUID", "FrameOfReferenceUID", "ConversionType", "PatientPosition", "AnatomicRegionSequence",
    "ViewCodeSequence", "CodeValue", "CodingSchemeDesignator", "CodingSchemeVersion",
    # plane and frame geometry, intensity units
    "PixelAspectRatio", "FrameIncrementPointer", "PixelSpacing", "ImagerPixelSpacing", "NominalScannedPixelSpacing",
    "SliceThickness", "SpacingBetweenSlices", "ImageOrientationPatient", "ImagePositionPatient", "SliceLocation",
    "RescaleType", "PixelIntensityRelationship", "PixelIntensityRelationshipSign",
    "SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence", "PixelMeasuresSequence",
    "PlanePositionSequence", "PlaneOrientationSequence", "FrameContentSequence", "InStackPositionNumber",
    "TemporalPositionIndex", "DimensionIndexValues",
    # acquisition parameters (numbers and coded values)
    "MagneticFieldStrength", "EchoTime", "RepetitionTime", "InversionTime", "FlipAngle", "EchoTrainLength",
    "NumberOfAverages", "ImagingFrequency", "ImagedNucleus", "ScanningSequence", "SequenceVariant",
    "ScanOptions", "MRAcquisitionType", "PercentSampling", "PercentPhaseFieldOfView", "PixelBandwidth",
    "AcquisitionMatrix", "InPlanePhaseEncodingDirection", "SAR", "KVP", "ExposureTime", "XRayTubeCurrent",
    "Exposure", "ExposureInuAs", "DistanceSourceToDetector", "DistanceSourceToPatient", "EstimatedRadiographicMagnificationFactor",
    "FieldOfViewShape", "FieldOfViewDimensions", "Grid", "FilterType", "FocalSpots", "AnodeTargetMaterial",
    "BodyPartThickness", "CompressionForce", "SensitivityValue", "ReconstructionDiameter",
    "GantryDetectorTilt", "TableHeight", "RotationDirection", "DetectorType",
}
# Code strings kept only as vocabulary terms (a hostile export can put anything in a CS).
VOCAB_CS = {"BodyPartExamined": vocab.body_part, "Laterality": vocab.laterality, "ImageLaterality": vocab.laterality,
            "Modality": vocab.modality}
_CS = re.compile(r"^[A-Z0-9_ ]{0,16}$")
# Retain Patient Characteristics Option (CID 7050 113108)
PATIENT_CHARACTERISTICS = {"PatientSex", "PatientAge", "PatientSize", "PatientWeight"}

CODES = {  # CID 7050 De-identification Method
    "basic": ("113100", "Basic Application Confidentiality Profile"),
    "clean_pixels": ("113101", "Clean Pixel Data Option"),
    "modified_dates": ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    "patient_characteristics": ("113108", "Retain Patient Characteristics Option"),
}


@dataclass(frozen=True)
class ExportOptions:
    retain_modified_dates: bool = True
    retain_patient_characteristics: bool = False
    allow_burned_in: bool = False


@dataclass(frozen=True)
class StoredFrame:
    """One frame as the catalog holds it: real value = stored * intensity_scale + intensity_offset."""

    image_id: str
    intensity_scale: float = 1.0
    intensity_offset: float = 0.0
    window_center: float | None = None
    window_width: float | None = None
    screened: bool = False  # screened before it was stored by a screen the claim may rest on (catalog/text_screening.py)


@dataclass(frozen=True)
class CatalogFile:
    """A DICOM file as the catalog knows it: where its header is, whose it is, its frames in order."""

    file_id: str
    location: str
    relpath: str
    size: int | None
    patient_key: str
    frames: tuple[StoredFrame, ...]


@dataclass
class ExportResult:
    written: list[Path] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    unreadable: Unreadable = field(default_factory=lambda: Unreadable("export", new_run_id()))

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


class _Skip(Exception):
    def __init__(self, reason: str, image_id: str | None = None):
        super().__init__(reason)
        self.reason, self.image_id = reason, image_id  # image_id: a stored image that could not be opened


def _filter(ds: Dataset, pseudo: Pseudonymizer, keep: set[str]) -> Dataset:
    out = Dataset()
    for elem in ds:
        if elem.tag.is_private or elem.keyword not in keep:
            continue  # X: removed (private tags, and every attribute not known to be safe)
        if elem.VR == "SQ":
            out.add_new(elem.tag, "SQ", Sequence([_filter(item, pseudo, keep) for item in elem.value]))
        elif elem.VR == "UI" and elem.keyword not in ("SOPClassUID", "TransferSyntaxUID"):
            out.add_new(elem.tag, "UI", pseudo.uid(str(elem.value)))  # U
        elif elem.keyword in VOCAB_CS:
            term = VOCAB_CS[elem.keyword](elem.value)
            if term:
                out.add_new(elem.tag, "CS", str(term).upper())
        elif elem.VR == "CS":
            values = elem.value if isinstance(elem.value, (list, pydicom.multival.MultiValue)) else [elem.value]
            if all(_CS.match(str(v)) for v in values):
                out.add(elem)
        elif elem.VR in ("LO", "LT", "SH", "ST", "UT", "PN", "AE", "UC"):
            continue  # free text never passes, whatever the keyword
        else:
            out.add(elem)
    return out


_SEXES = ("M", "F", "O")
_PLAUSIBLE = {"PatientSize": 3.0, "PatientWeight": 500.0}  # metres, kilograms: the most either can be


def _checked_characteristics(out: Dataset) -> None:
    """The kept characteristics hold only what they are meant to: an age (over 89 reported as 90: such ages
    identify), a sex from the defined terms, a plausible size and weight. Anything else, which could be any text
    an export or a typing slip put there, is removed rather than passed on."""
    if "PatientAge" in out:
        age = capped_age_string(out.PatientAge)
        if age is None:
            del out.PatientAge
        else:
            out.PatientAge = age
    if "PatientSex" in out and str(out.PatientSex).strip().upper() not in _SEXES:
        del out.PatientSex
    for keyword, most in _PLAUSIBLE.items():
        if keyword in out and not 0 < _number(out[keyword].value) <= most:
            delattr(out, keyword)


def _number(value: object) -> float:
    try:
        return float(str(value).strip())
    except ValueError:
        return float("nan")  # compares false with every bound


def _declares_burned_in(ds: Dataset) -> bool:
    return declares_burned_in(ds.get("BurnedInAnnotation"))


def deidentify(ds: Dataset, pseudo: Pseudonymizer, options: ExportOptions, patient_key: str,
               screened: bool = False) -> Dataset:
    """The header of `ds` de-identified; patient_key is the catalog's, so pseudonym and date shift agree."""
    keep = KEEP | (PATIENT_CHARACTERISTICS if options.retain_patient_characteristics else set())
    out = _filter(ds, pseudo, keep)
    # D / Z: the Type 1 and 2 identifying attributes the IODs require
    out.PatientName = patient_key
    out.PatientID = patient_key
    out.PatientBirthDate = ""
    out.StudyID = ""
    out.AccessionNumber = ""
    out.ReferringPhysicianName = ""
    if options.retain_patient_characteristics:
        _checked_characteristics(out)
    if options.retain_modified_dates:
        for kw in DATE_KEYWORDS:
            d = pseudo.shifted_date(ds.get(kw), patient_key)
            if d is not None:
                setattr(out, kw, d.strftime("%Y%m%d"))
        out.StudyDate = out.get("StudyDate", "")
    else:
        out.StudyDate = ""
    out.StudyTime = ""  # times are removed either way (a time and a shifted date could re-identify)
    if screened:
        out.BurnedInAnnotation = "NO"
    elif _declares_burned_in(ds):
        out.BurnedInAnnotation = "YES"  # exported only when allowed; the warning travels with it
    # an unscreened object claims nothing: the source's own NO was never checked
    out.PatientIdentityRemoved = "YES"
    applied = ["basic"] + (["clean_pixels"] if screened else []) + \
        (["modified_dates"] if options.retain_modified_dates else []) + \
        (["patient_characteristics"] if options.retain_patient_characteristics else [])
    out.DeidentificationMethod = "OrthoFoundation: PS3.15 Basic Profile, allow-list"
    items = []
    for name in applied:
        code = Dataset()
        code.CodeValue, code.CodeMeaning = CODES[name]
        code.CodingSchemeDesignator = "DCM"
        items.append(code)
    out.DeidentificationMethodCodeSequence = Sequence(items)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = out.SOPClassUID
    meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian  # the stored pixels, uncompressed
    meta.ImplementationClassUID = "2.25.140112284726611097313815361226016478261"
    out.file_meta = meta
    return out


def stored_pixels(frames: tuple[StoredFrame, ...], store: ImageStore) -> tuple[np.ndarray, float, float]:
    """(frames x rows x cols, slope, intercept). Frames of one file may have been shifted by different
    offsets at ingest (signed data); one DICOM rescale needs one, so they are re-shifted to the lowest."""
    arrays = []
    for f in frames:
        try:
            arrays.append(store.open(f.image_id))
        except PixelsRefused as e:  # the stage's firewall: the file is skipped with the reason, the export goes on
            raise _Skip("missing_store_object" if e.reason == "missing_object" else f"unreadable_pixels:{e.reason}",
                        f.image_id) from None
    scale = frames[0].intensity_scale or 1.0
    base = min(f.intensity_offset or 0.0 for f in frames)
    shifts = [((f.intensity_offset or 0.0) - base) / scale for f in frames]
    if len({a.shape for a in arrays}) > 1 or any((f.intensity_scale or 1.0) != scale for f in frames) \
            or any(abs(s - round(s)) > 1e-6 for s in shifts):
        raise _Skip("frames_differ")
    shifts = [round(s) for s in shifts]
    if not any(shifts) and len({a.dtype for a in arrays}) == 1:
        return np.stack(arrays), scale, base
    top = max(int(a.max()) + s for a, s in zip(arrays, shifts))
    if top > 65535:
        raise _Skip("frames_differ")
    dtype = np.uint8 if top <= 255 and all(a.dtype == np.uint8 for a in arrays) else np.uint16
    return np.stack([a.astype(dtype) + s for a, s in zip(arrays, shifts)]), scale, base


def _common_window(frames: tuple[StoredFrame, ...]) -> tuple[float, float] | None:
    windows = {(f.window_center, f.window_width) for f in frames}
    if len(windows) != 1:
        return None  # one window per frame is not expressible in a classic object: none is written
    center, width = windows.pop()
    return (center, width) if center is not None and width else None


def write_pixel_module(out: Dataset, ds: Dataset, pixels: np.ndarray, slope: float, intercept: float,
                       window: tuple[float, float] | None) -> None:
    """The image pixel module of the stored frames: grey, unsigned, at the stored depth."""
    bits = 8 * pixels.dtype.itemsize
    out.SamplesPerPixel = 1
    out.PhotometricInterpretation = "MONOCHROME2"  # MONOCHROME1 inverted, palette and colour made grey at ingest
    out.Rows, out.Columns = int(pixels.shape[1]), int(pixels.shape[2])
    out.BitsAllocated = out.BitsStored = bits
    out.HighBit = bits - 1
    out.PixelRepresentation = 0
    if len(pixels) > 1 or "NumberOfFrames" in ds:
        out.NumberOfFrames = len(pixels)
    out.RescaleSlope = DSfloat(slope, auto_format=True)
    out.RescaleIntercept = DSfloat(intercept, auto_format=True)
    if window:  # the catalog's window is in real units, already inverted for MONOCHROME1
        out.WindowCenter = DSfloat(window[0], auto_format=True)
        out.WindowWidth = DSfloat(window[1], auto_format=True)
        if str(ds.get("VOILUTFunction", "")) in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
            out.VOILUTFunction = ds.VOILUTFunction
    inverted = str(ds.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1"
    if inverted and "PixelIntensityRelationshipSign" in out:
        out.PixelIntensityRelationshipSign = -int(out.PixelIntensityRelationshipSign)  # inversion flips it
    data = np.ascontiguousarray(pixels.astype(f"<u{pixels.dtype.itemsize}", copy=False)).tobytes()
    out.add_new(0x7FE00010, "OB" if bits == 8 else "OW", data + b"\x00" * (len(data) % 2))


def _read_header(f: CatalogFile) -> Dataset:
    try:
        data = read_bytes(f.location, f.relpath, 4 << 30)
    except Exception:
        raise _Skip("unreadable") from None
    if f.size is not None and len(data) != f.size:
        raise _Skip("source_changed")  # not the version the catalog ingested
    try:
        with warnings.catch_warnings():  # pydicom's warnings quote element values
            warnings.simplefilter("ignore")
            return pydicom.dcmread(io.BytesIO(data), force=True, stop_before_pixels=True)
    except Exception:
        raise _Skip("unreadable") from None


def _export_file(f: CatalogFile, store: ImageStore, out_dir: Path, pseudo: Pseudonymizer,
                 options: ExportOptions) -> Path:
    ds = _read_header(f)
    screened = all(fr.screened for fr in f.frames)
    if not screened and _declares_burned_in(ds) and not options.allow_burned_in:
        raise _Skip("burned_in_annotation")
    pixels, slope, intercept = stored_pixels(f.frames, store)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clean = deidentify(ds, pseudo, options, f.patient_key, screened)
        write_pixel_module(clean, ds, pixels, slope, intercept, _common_window(f.frames))
    study = str(clean.get("StudyInstanceUID", ""))[5:21] or "0"
    target = out_dir / f.patient_key / study / f"{f.file_id}.dcm"
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        clean.save_as(tmp, enforce_file_format=True)
    return target


def export_files(files: Iterable[CatalogFile], store: ImageStore, out_dir: Path, secret: bytes,
                 options: ExportOptions) -> ExportResult:
    """Output names hold only pseudonyms; a file that cannot be exported is counted, never fatal."""
    pseudo = Pseudonymizer(secret)
    result = ExportResult()
    out_dir.mkdir(parents=True, exist_ok=True)
    for f in files:
        try:
            result.written.append(_export_file(f, store, out_dir, pseudo, options))
        except _Skip as e:
            result.skip(e.reason)
            if e.image_id is not None:
                result.unreadable.add(e.image_id, e.reason.partition(":")[2] or "missing_object")
        except Exception:  # its message could quote a value: counted by kind only
            result.skip("internal_error")
    return result


# Every frame of the DICOM files behind a selection, in file and frame order, with where each file is.
_FILE_FRAMES = """
    WITH selected AS ({selection}),
         exported AS (SELECT DISTINCT i.source, i.file_id FROM selected s JOIN images i ON i.image_id = s.image_id
                      WHERE i.format = 'dicom'),
         origin AS (SELECT source, file_id, file_version, location, path_bytes, size FROM lineage
                    QUALIFY row_number() OVER (PARTITION BY source, file_id, file_version ORDER BY run_id DESC) = 1)
    SELECT o.file_id, l.location, l.path_bytes, l.size, o.patient_key,
           o.image_id, o.intensity_scale, o.intensity_offset, o.window_center, o.window_width, {screened}
    FROM exported e
    JOIN occurrences o ON o.source = e.source AND o.file_id = e.file_id
    JOIN current_files f ON f.source = o.source AND f.file_id = o.file_id
    JOIN origin l ON l.source = f.source AND l.file_id = f.file_id AND l.file_version = f.file_version
    ORDER BY o.source, o.file_id, o.frame_index"""


def _catalog_files(cursor, batch: int = 4096) -> Iterator[CatalogFile]:
    rows = itertools.chain.from_iterable(iter(lambda: cursor.fetchmany(batch), []))
    for (file_id, location, path_bytes, size, patient_key), group in itertools.groupby(rows, key=lambda r: r[:5]):
        # the path exactly as the file system has it (`path` only displays bytes that are not UTF-8)
        yield CatalogFile(file_id, location, os.fsdecode(path_bytes), size, patient_key,
                          tuple(StoredFrame(*r[5:]) for r in group))


def export_selection(ws, query: str, out_dir: Path, options: ExportOptions = ExportOptions()) -> ExportResult:
    """Export the DICOM files behind the images a query selects (each file once, all its frames)."""
    from catalog import db

    selection = f"SELECT DISTINCT image_id FROM ({query.strip().rstrip(';')})"
    with db.connection(ws, private=True) as con:
        selected, dicom_images = con.execute(f"""
            SELECT count(*), count(*) FILTER (WHERE i.format = 'dicom')
            FROM ({selection}) s LEFT JOIN images i ON i.image_id = s.image_id""").fetchone()
        # catalogs written before burned-in text screening have no text_detector column: nothing was screened
        columns = {row[0] for row in con.execute("DESCRIBE occurrences").fetchall()}
        screened = claims_clean_sql("o.text_detector") if "text_detector" in columns else "false"
        cursor = con.execute(_FILE_FRAMES.format(selection=selection, screened=screened))
        result = export_files(_catalog_files(cursor), ImageStore(ws.store_dir), out_dir, ws.secret(), options)
    result.unreadable.save(ws)
    if selected - dicom_images:
        result.skipped["not_dicom"] = selected - dicom_images
    return result
