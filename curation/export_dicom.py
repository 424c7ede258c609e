"""De-identified DICOM export (DICOM PS3.15 Annex E, Basic Application Level Confidentiality Profile).

The profile lists identifying attributes and an action for each (table E.1-1: D dummy, Z empty,
X remove, K keep, C clean, U consistent UID). This exporter is stricter than the table in one
documented way: it keeps only attributes known to be safe (`KEEP`: pixel description, geometry,
acquisition parameters, coded content) and removes everything else, so an attribute the table
lists and this file forgets can only be removed, never leak. Private tags are removed. Then:
  U  every UID, at any depth, is replaced by 2.25.<HMAC of the original> (same input, same output)
  D  Patient's Name and Patient ID become the patient pseudonym; Study ID, Accession Number and
     the Patient/Study/Series attributes the IODs require (Type 1/2) get dummy or empty values
  options "Retain Longitudinal Temporal Information with Modified Dates" (dates shifted by the
     patient's offset, the same offset as the catalog's; times removed) and "Retain Patient
     Characteristics" (sex, age, size, weight)
PatientIdentityRemoved = YES; DeidentificationMethodCodeSequence lists the CID 7050 codes applied.
Objects that declare burned-in annotation are not exported unless allowed.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence

from ingest import vocab
from ingest.deid import Pseudonymizer

# Attributes that carry no identity: kept as they are (K), inside sequences too.
KEEP = {
    # SOP common, general image and series descriptors that are coded, not free text
    "SOPClassUID", "SOPInstanceUID", "SpecificCharacterSet", "ImageType", "Modality", "InstanceNumber",
    "SeriesNumber", "AcquisitionNumber", "BodyPartExamined", "Laterality", "ImageLaterality", "ViewPosition",
    "PatientOrientation", "PresentationIntentType", "BurnedInAnnotation", "RecognizableVisualFeatures",
    "LossyImageCompression", "LossyImageCompressionRatio", "LossyImageCompressionMethod", "StudyInstanceUID",
    "SeriesInstanceUID", "FrameOfReferenceUID", "ConversionType", "PatientPosition", "AnatomicRegionSequence",
    "ViewCodeSequence", "CodeValue", "CodingSchemeDesignator", "CodingSchemeVersion",
    # image pixel, plane and frame geometry
    "SamplesPerPixel", "PhotometricInterpretation", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit",
    "PixelRepresentation", "PlanarConfiguration", "PixelAspectRatio", "NumberOfFrames", "FrameIncrementPointer",
    "PixelData", "FloatPixelData", "DoubleFloatPixelData", "SmallestImagePixelValue", "LargestImagePixelValue",
    "PixelPaddingValue", "PixelSpacing", "ImagerPixelSpacing", "NominalScannedPixelSpacing", "SliceThickness",
    "SpacingBetweenSlices", "ImageOrientationPatient", "ImagePositionPatient", "SliceLocation",
    "RescaleIntercept", "RescaleSlope", "RescaleType", "WindowCenter", "WindowWidth", "VOILUTFunction",
    "RedPaletteColorLookupTableDescriptor", "GreenPaletteColorLookupTableDescriptor",
    "BluePaletteColorLookupTableDescriptor", "RedPaletteColorLookupTableData", "GreenPaletteColorLookupTableData",
    "BluePaletteColorLookupTableData", "PixelIntensityRelationship", "PixelIntensityRelationshipSign",
    "SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence", "PixelMeasuresSequence",
    "PlanePositionSequence", "PlaneOrientationSequence", "PixelValueTransformationSequence",
    "FrameVOILUTSequence", "FrameContentSequence", "InStackPositionNumber", "TemporalPositionIndex",
    "DimensionIndexValues",
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
DATES = {"StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"}

CODES = {  # CID 7050 De-identification Method
    "basic": ("113100", "Basic Application Confidentiality Profile"),
    "modified_dates": ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    "patient_characteristics": ("113108", "Retain Patient Characteristics Option"),
}


@dataclass(frozen=True)
class ExportOptions:
    retain_modified_dates: bool = True
    retain_patient_characteristics: bool = False
    allow_burned_in: bool = False


@dataclass
class ExportResult:
    written: list[Path] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)


def remap_uid(secret: bytes, uid: str) -> str:
    digest = hmac.new(secret, f"uid\x00{uid}".encode(), hashlib.sha256).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


def _filter(ds: Dataset, secret: bytes, keep: set[str]) -> Dataset:
    out = Dataset()
    for elem in ds:
        if elem.tag.is_private or elem.keyword not in keep:
            continue  # X: removed (private tags, and every attribute not known to be safe)
        if elem.VR == "SQ":
            out.add_new(elem.tag, "SQ", Sequence([_filter(item, secret, keep) for item in elem.value]))
        elif elem.VR == "UI" and elem.keyword not in ("SOPClassUID", "TransferSyntaxUID"):
            out.add_new(elem.tag, "UI", remap_uid(secret, str(elem.value)))  # U
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


def _age_years(value) -> int | None:
    m = re.match(r"^(\d{3})([DWMY])$", str(value or ""))
    if not m:
        return None
    return int(int(m[1]) * {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1}[m[2]])


def deidentify(ds: Dataset, secret: bytes, pseudo: Pseudonymizer, options: ExportOptions) -> Dataset:
    patient_key = pseudo.patient(ds.get("PatientID", "") or f"{ds.get('PatientName', '')}|{ds.get('StudyInstanceUID', '')}")
    keep = KEEP | (PATIENT_CHARACTERISTICS if options.retain_patient_characteristics else set())
    out = _filter(ds, secret, keep)
    # D / Z: the Type 1 and 2 identifying attributes the IODs require
    out.PatientName = patient_key
    out.PatientID = patient_key
    out.PatientBirthDate = ""
    out.StudyID = ""
    out.AccessionNumber = ""
    out.ReferringPhysicianName = ""
    if options.retain_patient_characteristics and _age_years(out.get("PatientAge")) is not None:
        out.PatientAge = f"{min(_age_years(out.PatientAge), 90):03d}Y"  # ages over 89 identify: reported as 90
    if options.retain_modified_dates:
        for kw in DATES:
            d = pseudo.shifted_date(ds.get(kw), patient_key)
            if d is not None:
                setattr(out, kw, d.strftime("%Y%m%d"))
        out.StudyDate = out.get("StudyDate", "")
    else:
        out.StudyDate = ""
    out.StudyTime = ""  # times are removed either way (a time and a shifted date could re-identify)
    out.PatientIdentityRemoved = "YES"
    applied = ["basic"] + (["modified_dates"] if options.retain_modified_dates else []) + \
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
    meta.TransferSyntaxUID = ds.file_meta.TransferSyntaxUID
    meta.ImplementationClassUID = "2.25.140112284726611097313815361226016478261"
    out.file_meta = meta
    return out


def export_selection(ws, query: str, out_dir: Path, options: ExportOptions = ExportOptions()) -> ExportResult:
    """Export the DICOM files behind the images a query selects (each file once)."""
    from catalog import db

    con = db.connect(ws, private=True)
    try:
        selected = con.execute(f"SELECT count(DISTINCT image_id) FROM ({query.strip().rstrip(';')})").fetchall()[0][0]
        rows = con.execute(f"""
            SELECT DISTINCT i.file_id, l.location, l.path
            FROM (SELECT DISTINCT image_id FROM ({query.strip().rstrip(';')})) q
            JOIN images i USING (image_id)
            JOIN current_files f ON f.source = i.source AND f.file_id = i.file_id
            JOIN lineage l ON l.source = f.source AND l.file_id = f.file_id AND l.file_version = f.file_version
            WHERE i.format = 'dicom' ORDER BY i.file_id""").fetchall()
        dicom_images = con.execute(f"""SELECT count(*) FROM (SELECT DISTINCT image_id FROM ({query.strip().rstrip(';')}))
                                       JOIN images USING (image_id) WHERE format = 'dicom'""").fetchall()[0][0]
    finally:
        con.close()
    result = export_files(rows, out_dir, ws.secret(), options)
    if selected - dicom_images:
        result.skipped["not_dicom"] = selected - dicom_images
    return result


def export_files(sources: list[tuple[str, str, str]], out_dir: Path, secret: bytes, options: ExportOptions) -> ExportResult:
    """sources: (file id, source location, relative path); output names hold only pseudonyms."""
    import io

    from ingest.scan import read_bytes

    pseudo = Pseudonymizer(secret)
    result = ExportResult()
    out_dir.mkdir(parents=True, exist_ok=True)
    for file_id, location, relpath in sources:
        try:
            ds = pydicom.dcmread(io.BytesIO(read_bytes(location, relpath, 4 << 30)))
        except Exception:
            result.skipped["unreadable"] = result.skipped.get("unreadable", 0) + 1
            continue
        if str(ds.get("BurnedInAnnotation", "")).upper() == "YES" and not options.allow_burned_in:
            result.skipped["burned_in_annotation"] = result.skipped.get("burned_in_annotation", 0) + 1
            continue
        clean = deidentify(ds, secret, pseudo, options)
        target = out_dir / clean.PatientID / remap_uid(secret, str(ds.StudyInstanceUID))[5:21] / f"{file_id}.dcm"
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        clean.save_as(tmp, enforce_file_format=True)
        os.replace(tmp, target)
        result.written.append(target)
    return result
