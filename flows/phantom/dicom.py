"""The DICOM objects of the pacs export: radiographs (DX, or CR in MONOCHROME1), MR slice series, a
multi-frame MR object and a structured report, each encoded to the bytes of a Part 10 file."""

from __future__ import annotations

import io

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from flows.phantom.dicom_identity import new_uid, plant_identity
from flows.phantom.patients import PhantomPatient

DX_CLASS = "1.2.840.10008.5.1.4.1.1.1.1"
CR_CLASS = "1.2.840.10008.5.1.4.1.1.1"
MR_CLASS = "1.2.840.10008.5.1.4.1.1.4"
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.11"
# One implementation, one UID (the standard's meaning of it), derived, not drawn: a seed gives the same bytes.
IMPLEMENTATION_UID = generate_uid(prefix="1.2.826.0.1.3680043.10.", entropy_srcs=["orthofoundation phantom"])


def _finish(ds: Dataset, sop_class: str) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPLEMENTATION_UID
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _pixels(ds: Dataset, arr: np.ndarray, photometric: str = "MONOCHROME2", bits_stored: int = 12) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = int(arr.shape[-2]), int(arr.shape[-1])
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits_stored, bits_stored - 1, 0
    ds.PixelData = np.ascontiguousarray(arr, dtype="<u2").tobytes()


def radiograph_dicom(p: PhantomPatient, arr: np.ndarray, side: str, rng, study_uid: str, monochrome1: bool = False,
                     body_part: str = "KNEE") -> bytes:
    ds = Dataset()
    plant_identity(ds, p, study_uid, new_uid(rng), rng)
    ds.Modality = "CR" if monochrome1 else "DX"
    ds.BodyPartExamined = body_part
    ds.ViewPosition = "AP"
    ds.ImageLaterality = side
    ds.SeriesDescription = f"{p.family} {body_part} AP {'LEFT' if side == 'L' else 'RIGHT'}"
    ds.ImagerPixelSpacing = [0.15, 0.15]
    ds.InstanceNumber = 1
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.BurnedInAnnotation = "NO"
    _pixels(ds, 4095 - arr if monochrome1 else arr, "MONOCHROME1" if monochrome1 else "MONOCHROME2")
    return _finish(ds, CR_CLASS if monochrome1 else DX_CLASS)


def mri_slices(p: PhantomPatient, vol: np.ndarray, rng, study_uid: str) -> list[bytes]:
    series_uid = new_uid(rng)
    out = []
    for k in range(vol.shape[2]):
        ds = Dataset()
        plant_identity(ds, p, study_uid, series_uid, rng)
        ds.Modality = "MR"
        ds.BodyPartExamined = "KNEE"
        ds.SeriesDescription = f"SAG PD FS {p.family}"
        ds.ProtocolName = f"knee_{p.given}_pd_fs"
        ds.MagneticFieldStrength, ds.EchoTime, ds.RepetitionTime = 3.0, 30.0, 3000.0
        ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
        ds.ImagePositionPatient = [-20.0 + 3.0 * k, -60.0, 60.0]
        ds.PixelSpacing, ds.SliceThickness = [0.6, 0.6], 3.0
        ds.InstanceNumber = vol.shape[2] - k  # numbered against position: slice order must come from geometry
        _pixels(ds, vol[:, :, k])
        out.append(_finish(ds, MR_CLASS))
    return out


def multiframe_mri(p: PhantomPatient, vol: np.ndarray, rng, study_uid: str) -> bytes:
    ds = Dataset()
    plant_identity(ds, p, study_uid, new_uid(rng), rng)
    ds.Modality = "MR"
    ds.BodyPartExamined = "KNEE"
    ds.SeriesDescription = f"COR T1 {p.family}"
    ds.NumberOfFrames = vol.shape[2]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    ds.PixelSpacing, ds.SliceThickness = [0.6, 0.6], 3.0
    _pixels(ds, np.moveaxis(vol, 2, 0))
    return _finish(ds, MR_CLASS)


def structured_report(p: PhantomPatient, rng, study_uid: str) -> bytes:
    ds = Dataset()
    plant_identity(ds, p, study_uid, new_uid(rng), rng)
    ds.Modality = "SR"
    item = Dataset()
    item.TextValue = f"Findings for {p.given} {p.family}: medial joint space narrowing"
    ds.ContentSequence = Sequence([item])
    return _finish(ds, SR_CLASS)
