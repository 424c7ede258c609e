import gzip

import numpy as np
import pytest

from catalog.deid import Pseudonymizer
from ingest.readers import Limits, ReadContext, read_frames
from ingest.reasons import Quarantine
from tests.ingest.file_factory import nifti_bytes, png


def ctx(**kw):
    return ReadContext(Pseudonymizer(b"s" * 32), "f" * 16, **kw)


def frames(data, name, **kw):
    return list(read_frames(data, name, ctx(**kw))[1])


def reason(data, name, **kw):
    with pytest.raises(Quarantine) as e:
        frames(data, name, **kw)
    return e.value.reason


def test_auto_axis_is_the_thickest_voxels_and_geometry_is_recorded():
    vol = np.arange(10 * 12 * 4, dtype=np.int16).reshape(10, 12, 4)
    affine = np.diag([0.5, 0.5, 4.0, 1.0])  # axial stack of 4 slices, 4 mm thick
    out = frames(nifti_bytes(vol, affine), "v.nii.gz")
    assert len(out) == 4
    assert {f.attrs["plane"] for f in out} == {"axial"}
    assert out[0].attrs["slice_thickness"] == 4.0 and out[0].attrs["orientation"] == "RAS"
    assert [f.attrs["slice_position"] for f in out] == [0.0, 4.0, 8.0, 12.0]
    # RAS display: the slice is transposed and flipped so superior/anterior is at the top
    assert np.array_equal(out[0].pixels, vol[:, :, 0].T[::-1].astype(np.uint16))


def test_nominal_affine_slices_as_stored_and_all_planes_on_request():
    vol = np.random.default_rng(0).integers(0, 255, (6, 7, 3), dtype=np.uint8)
    out = frames(nifti_bytes(vol), "v.nii.gz")
    assert len(out) == 3 and np.array_equal(out[1].pixels, vol[:, :, 1]) and out[0].pixels.dtype == np.uint8
    assert len(frames(nifti_bytes(vol), "v.nii.gz", slice_axis="all")) == 6 + 7 + 3


def test_4d_volumes_are_each_sliced():
    vol = np.zeros((4, 4, 3, 2), np.int16)
    vol[..., 1] = 7
    out = frames(nifti_bytes(vol, gz=False), "v.nii")
    assert len(out) == 6 and {f.attrs["volume_index"] for f in out} == {0, 1}


def test_float_volumes_keep_their_values_through_the_mapping():
    vol = np.linspace(-1, 1, 4 * 4 * 2, dtype=np.float32).reshape(4, 4, 2)
    (a, b) = frames(nifti_bytes(vol), "v.nii.gz")
    back = a.pixels * a.attrs["intensity_scale"] + a.attrs["intensity_offset"]
    assert np.abs(back - vol[:, :, 0]).max() < 1e-3


def test_a_gzip_bomb_inflates_no_further_than_its_header_declares():
    zeros = gzip.compress(b"\x00" * (64 << 20))
    assert len(zeros) < 200_000
    # refused from its first 540 inflated bytes: no NIfTI header there
    assert reason(zeros, "bomb.nii.gz", limits=Limits(max_decoded_bytes=8 << 20)) == "invalid_nifti"
    vol = np.arange(8 * 8 * 2, dtype=np.uint8).reshape(8, 8, 2)
    bomb = gzip.compress(nifti_bytes(vol, gz=False) + b"\x00" * (64 << 20))
    # the declared 8 x 8 x 2 are read; the 64 MiB behind them are never inflated (the budget is 8 MiB)
    assert len(frames(bomb, "b.nii.gz", limits=Limits(max_decoded_bytes=8 << 20))) == 2
    big = np.zeros((512, 512, 64), np.uint8)
    assert reason(nifti_bytes(big), "big.nii.gz", limits=Limits(max_decoded_bytes=8 << 20)) == "absurd_dimensions"


def test_corrupt_and_truncated_headers():
    good = nifti_bytes(np.zeros((8, 8, 4), np.int16), gz=False)
    assert reason(b"\x00" * 40 + good[40:], "c.nii") == "invalid_nifti"
    assert reason(good[:400], "t.nii") == "truncated"
    noisy = nifti_bytes(np.random.default_rng(5).integers(0, 999, (16, 16, 8), dtype=np.int16), gz=True)
    assert reason(noisy[: len(noisy) // 2], "t.nii.gz") == "truncated"


def test_16_bit_png_is_exact_and_rgb_is_converted():
    arr = np.random.default_rng(2).integers(0, 65536, (9, 11), dtype=np.uint16)
    (f,) = frames(png(arr), "a.png")
    assert f.pixels.dtype == np.uint16 and np.array_equal(f.pixels, arr)
    rgb = np.random.default_rng(3).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    (g,) = frames(png(rgb), "c.png")
    assert g.pixels.shape == (5, 6) and g.pixels.dtype == np.uint8


def test_truncated_png_and_wrong_extension():
    data = png(np.random.default_rng(4).integers(0, 256, (64, 64), dtype=np.uint8))
    assert reason(data[: len(data) // 2], "t.png") in {"truncated", "decode_error"}
    assert reason(data, "image.dcm") == "extension_mismatch"
    assert reason(data, "volume.nii") == "extension_mismatch"


def test_path_hints_become_pseudonyms_not_text():
    data = png(np.zeros((4, 4), np.uint8))
    (f,) = frames(data, "9001234L.png", hints={"patient": "9001234", "laterality": "L", "split": "train"})
    assert f.attrs["laterality"] == "L" and f.attrs["source_split"] == "train"
    assert "9001234" not in repr(f.attrs) and f.attrs["patient_key_basis"] == "path_pattern"


def test_every_reader_derives_the_patient_the_same_way():
    from tests.ingest.dicom_factory import make_dicom

    dicom = make_dicom(np.zeros((4, 4), np.uint16), PatientID="9001234")
    by_header = frames(dicom, "a.dcm")[0].attrs
    by_path = [frames(dicom, "a.dcm", hints={"patient": "9001234"})[0].attrs,
               frames(nifti_bytes(np.zeros((4, 4, 2), np.int16)), "v.nii.gz", hints={"patient": "9001234"})[0].attrs,
               frames(png(np.zeros((4, 4), np.uint8)), "k.png", hints={"patient": "9001234"})[0].attrs]
    assert by_header["patient_key_basis"] == "patient_id"
    assert {a["patient_key"] for a in by_path} == {by_header["patient_key"]}
    assert {a["patient_key_basis"] for a in by_path} == {"path_pattern"}
    exams = [frames(nifti_bytes(np.zeros((4, 4, 2), np.int16)), "v.nii.gz", hints={"exam": "0042"})[0].attrs,
             frames(png(np.zeros((4, 4), np.uint8)), "k.png", hints={"exam": "0042"})[0].attrs]
    assert len({a["patient_key"] for a in exams}) == 1 and {a["patient_key_basis"] for a in exams} == {"exam"}
