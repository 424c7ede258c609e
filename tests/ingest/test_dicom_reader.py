import glob
import os

import numpy as np
import pydicom
import pytest

from catalog.deid import Pseudonymizer
from ingest.readers import ReadContext, read_frames
from ingest.reasons import Quarantine
from tests.ingest.dicom_factory import CT, SR, make_dicom


def ctx(**kw):
    return ReadContext(Pseudonymizer(b"s" * 32), "f" * 16, **kw)


def frames(data, name="x.dcm", **kw):
    fmt, it = read_frames(data, name, ctx(**kw))
    return list(it)


def reason(data, name="x.dcm"):
    with pytest.raises(Quarantine) as e:
        frames(data, name)
    return e.value.reason


def test_monochrome1_is_inverted_once():
    arr = np.array([[0, 100], [4000, 4095]], dtype=np.uint16)
    (f,) = frames(make_dicom(arr, PhotometricInterpretation="MONOCHROME1", Modality="CR"))
    assert np.array_equal(f.pixels, 4095 - arr)
    assert f.attrs["photometric"] == "MONOCHROME1"


def test_rescale_is_applied_through_the_recorded_mapping():
    raw = np.array([[0, 1024], [2000, 4095]], dtype=np.int16)
    (f,) = frames(make_dicom(raw, CT, signed=True, bits_stored=16, Modality="CT", RescaleSlope=1, RescaleIntercept=-1024))
    real = f.pixels * f.attrs["intensity_scale"] + f.attrs["intensity_offset"]
    assert np.array_equal(real, raw - 1024.0)


def test_multiframe_is_split_into_frames_in_order():
    vol = np.arange(3 * 4 * 5, dtype=np.uint16).reshape(3, 4, 5)
    out = frames(make_dicom(vol, frames=3))
    assert len(out) == 3
    for i, f in enumerate(out):
        assert np.array_equal(f.pixels, vol[i]) and f.attrs["frame_index"] == i


def test_structured_report_is_recorded_not_crashed_on():
    assert reason(make_dicom(None, SR, Modality="SR")) == "non_image_object"


def test_declared_giant_image_with_ten_bytes_is_quarantined():
    data = make_dicom(np.zeros((2, 2), np.uint16))
    ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(data))
    ds.Rows = ds.Columns = 65535
    ds.PixelData = b"\x00" * 10
    buf = pydicom.filebase.DicomBytesIO()
    ds.save_as(buf)
    assert reason(buf.getvalue()) == "absurd_dimensions"


def test_short_pixel_data_is_truncated():
    data = make_dicom(np.zeros((64, 64), np.uint16))
    assert reason(data[:-100]) == "truncated"


def test_burned_in_annotation_is_declared_to_the_screening():
    (f,) = frames(make_dicom(np.zeros((4, 4), np.uint16), BurnedInAnnotation="YES"))
    assert f.attrs["burned_in_declared"] is True
    (g,) = frames(make_dicom(np.zeros((4, 4), np.uint16)))
    assert g.attrs["burned_in_declared"] is False


def test_overlays_never_reach_the_pixels():
    """An overlay plane (60xx,3000) and overlay bits above BitsStored in the pixel data are both dropped."""
    arr = np.full((8, 8), 100, np.uint16)
    with_bits = arr.copy()
    with_bits[2:4, 2:6] |= 1 << 12  # an old-style overlay in the unused high bits
    overlay = np.packbits(np.ones(64, np.uint8), bitorder="little").tobytes()
    data = make_dicom(with_bits, bits_stored=12)
    ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(data))
    ds.add_new(0x60000010, "US", 8)
    ds.add_new(0x60000011, "US", 8)
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    ds.add_new(0x60003000, "OW", overlay)
    buf = pydicom.filebase.DicomBytesIO()
    ds.save_as(buf)
    (f,) = frames(buf.getvalue())
    assert np.array_equal(f.pixels, arr)


def test_random_bytes_named_dcm():
    rng = np.random.default_rng(0)
    assert reason(rng.integers(0, 256, 5000, dtype=np.uint8).tobytes()) in {"invalid_dicom", "unrecognized_format"}


def test_nested_sequences_are_never_read_into_the_catalog():
    from tests.ingest.dicom_factory import nested

    (f,) = frames(make_dicom(np.zeros((4, 4), np.uint16), ContentSequence=pydicom.Sequence([nested(60)])))
    assert "leaf" not in repr(f.attrs)


@pytest.mark.reliability  # a hostile input
def test_hostile_nesting_depth_is_quarantined_not_crashed():
    from tests.ingest.dicom_factory import deep_sequence_bytes

    data = make_dicom(None) + deep_sequence_bytes(5000)
    assert reason(data) in {"invalid_dicom", "no_pixel_data", "truncated"}


def test_non_utf8_text_does_not_crash_and_does_not_leak():
    data = make_dicom(np.zeros((4, 4), np.uint16), SpecificCharacterSet="ISO_IR 100",
                      SeriesDescription="KNEE M\xfcller")
    (f,) = frames(data)
    assert f.attrs["body_part"] == "knee"
    assert "ller" not in repr(f.attrs)


def test_geometry_gives_plane_and_slice_position():
    data = make_dicom(np.zeros((4, 4), np.uint16), ImageOrientationPatient=[0, 1, 0, 0, 0, -1],
                      ImagePositionPatient=[12.5, 0, 0], PixelSpacing=[0.5, 0.4], SeriesDescription="SAG PD FS")
    (f,) = frames(data)
    assert f.attrs["plane"] == "sagittal"
    assert f.attrs["slice_position"] == pytest.approx(-12.5)
    assert (f.attrs["pixel_spacing_row"], f.attrs["pixel_spacing_col"]) == (0.5, 0.4)
    assert (f.attrs["sequence_family"], f.attrs["fat_suppressed"]) == ("pd", True)


def test_missing_transfer_syntax_is_inferred():
    data = make_dicom(np.arange(16, dtype=np.uint16).reshape(4, 4))
    ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(data))
    del ds.file_meta.TransferSyntaxUID
    buf = pydicom.filebase.DicomBytesIO()
    pydicom.filewriter.dcmwrite(buf, ds, implicit_vr=False, little_endian=True)
    (f,) = frames(buf.getvalue())
    assert np.array_equal(f.pixels, np.arange(16).reshape(4, 4))


def _pydicom_files():
    from flows.demo import pydicom_folders

    out = []
    for folder in pydicom_folders().values():
        out += [p for p in glob.glob(str(folder / "**" / "*"), recursive=True) if os.path.isfile(p)]
    return sorted(out)


@pytest.mark.slow
def test_every_pydicom_test_file_decodes_or_is_quarantined_with_a_known_reason():
    """Hundreds of real and deliberately odd files: a frame or a reason, never an exception."""
    from ingest.reasons import REASONS

    decoded = 0
    for path in _pydicom_files():
        with open(path, "rb") as f:
            data = f.read()
        try:
            out = frames(data, os.path.basename(path))
            decoded += 1
            for fr in out:
                assert fr.pixels.ndim == 2 and fr.pixels.dtype in (np.uint8, np.uint16)
        except Quarantine as q:
            assert q.reason in REASONS
    assert decoded > 100


@pytest.mark.parametrize("name", ["JPEG2000.dcm", "JPEG-LL.dcm", "MR_small_RLE.dcm", "JPEGLSNearLossless_16.dcm", "MR_small_bigendian.dcm"])
def test_compressed_transfer_syntaxes_decode(name):
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"{name} not installed")
    out = frames(open(path, "rb").read())
    ref = pydicom.dcmread(path).pixel_array
    assert out and out[0].pixels.shape == ref.shape[-2:]


def test_malformed_values_leak_through_no_warning_or_log(caplog):
    import warnings

    data = make_dicom(np.zeros((4, 4), np.uint16), StudyDate="Zorblatt", PatientBirthDate="Quentin",
                      PatientAge="Vexhallow", AcquisitionDate="Marplewick")
    with warnings.catch_warnings(record=True) as caught, caplog.at_level("DEBUG"):
        warnings.simplefilter("always")
        (f,) = frames(data)
    said = " ".join(str(w.message) for w in caught) + caplog.text + repr(f.attrs)
    for planted in ("Zorblatt", "Quentin", "Vexhallow", "Marplewick"):
        assert planted not in said
    assert f.attrs["study_date"] is None and f.attrs["patient_age_days"] is None
