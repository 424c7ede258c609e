"""Small DICOM objects built in code for reader tests."""

import io

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

MR = "1.2.840.10008.5.1.4.1.1.4"
CT = "1.2.840.10008.5.1.4.1.1.2"
SR = "1.2.840.10008.5.1.4.1.1.88.11"


def make_dicom(pixels: np.ndarray | None = None, sop_class: str = MR, signed: bool = False, bits_stored: int = 12,
               frames: int | None = None, **attrs) -> bytes:
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "TESTPATIENT01"
    ds.Modality = attrs.pop("Modality", "MR")
    if pixels is not None:
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = attrs.pop("PhotometricInterpretation", "MONOCHROME2")
        ds.Rows, ds.Columns = pixels.shape[-2], pixels.shape[-1]
        ds.BitsAllocated = 8 * pixels.dtype.itemsize
        ds.BitsStored, ds.HighBit = bits_stored, bits_stored - 1
        ds.PixelRepresentation = 1 if signed else 0
        if frames:
            ds.NumberOfFrames = frames
        ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    for k, v in attrs.items():
        setattr(ds, k, v)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def nested(depth: int) -> Dataset:
    item = Dataset()
    item.CodeMeaning = "leaf"
    for _ in range(depth):
        outer = Dataset()
        outer.ContentSequence = Sequence([item])
        item = outer
    return item


def deep_sequence_bytes(depth: int) -> bytes:
    """(0040,A730) ContentSequence nested `depth` times, undefined lengths, explicit VR little endian."""
    import struct

    seq_open = struct.pack("<HH2sHI", 0x0040, 0xA730, b"SQ", 0, 0xFFFFFFFF)
    item_open = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    item_close = struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
    seq_close = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    return (seq_open + item_open) * depth + (item_close + seq_close) * depth


def exported_frames(ds) -> np.ndarray:
    """An exported dataset's frames as (n, rows, cols), one frame or many."""
    arr = ds.pixel_array
    return arr if arr.ndim == 3 else arr[None]


def encapsulated_dicom(stream: bytes, syntax: str, rows: int, cols: int) -> bytes:
    """An 8-bit DICOM whose header says rows x cols and whose one frame is the compressed `stream`, as given
    (a codestream may declare another size: the tests and bench/hostile_memory.py plant such lies)."""
    ds = pydicom.dcmread(io.BytesIO(make_dicom(np.zeros((2, 2), np.uint8), bits_stored=8)))
    ds.Rows, ds.Columns = rows, cols
    ds.PixelData = encapsulate([stream])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = syntax
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()
