import numpy as np
import pytest

from catalog.pixels import decode_png, encode_png, image_id
from ingest.pixels import to_gray, to_storable
from ingest.reasons import Quarantine


def test_unsigned_16_bit_is_kept_exactly():
    raw = np.array([[0, 4095], [17, 2048]], dtype=np.uint16)
    s = to_storable(raw)
    assert s.pixels.dtype == np.uint16 and np.array_equal(s.pixels, raw)
    assert (s.scale, s.offset) == (1.0, 0.0)


def test_signed_ct_is_shifted_and_real_values_recoverable():
    raw = np.array([[-1024, 0], [400, 3071]], dtype=np.int16)
    s = to_storable(raw, slope=1.0, intercept=-1024.0)
    real = s.pixels.astype(np.float64) * s.scale + s.offset
    assert np.array_equal(real, raw.astype(np.float64) - 1024)
    assert s.pixels.min() == 0 and s.pixels.dtype == np.uint16


def test_eight_bit_source_stays_eight_bit():
    s = to_storable(np.arange(256, dtype=np.uint8).reshape(16, 16))
    assert s.pixels.dtype == np.uint8


def test_float_data_is_quantised_to_16_bits_with_recorded_mapping():
    real = np.linspace(-3.5, 12.25, 100, dtype=np.float32).reshape(10, 10)
    s = to_storable(real)
    back = s.pixels * s.scale + s.offset
    assert s.pixels.dtype == np.uint16 and s.pixels.max() == 65535
    assert np.abs(back - real).max() <= s.scale / 2 + 1e-9


def test_png_round_trip_keeps_16_bits():
    arr = np.random.default_rng(0).integers(0, 65536, (33, 47), dtype=np.uint16)
    assert np.array_equal(decode_png(encode_png(arr)), arr)
    arr8 = arr.astype(np.uint8)
    out = decode_png(encode_png(arr8))
    assert out.dtype == np.uint8 and np.array_equal(out, arr8)


def test_png_has_no_text_chunks():
    data = encode_png(np.zeros((4, 4), np.uint16))
    for chunk in (b"tEXt", b"zTXt", b"iTXt", b"eXIf", b"tIME"):
        assert chunk not in data


def test_image_id_depends_on_pixels_dtype_and_shape():
    a = np.zeros((4, 8), np.uint16)
    assert image_id(a) == image_id(a.copy())
    assert image_id(a) != image_id(a.reshape(8, 4))
    assert image_id(a) != image_id(a.astype(np.uint8))
    b = a.copy()
    b[0, 0] = 1
    assert image_id(a) != image_id(b)
    assert "." not in image_id(a) and len(image_id(a)) == 32


def test_grey_stored_as_rgb_is_taken_exactly_and_colour_becomes_luma():
    g = np.random.default_rng(1).integers(0, 256, (5, 5), dtype=np.uint8)
    assert np.array_equal(to_gray(np.stack([g, g, g], -1)), g)
    rgb = np.zeros((1, 1, 3), np.uint8)
    rgb[..., 0] = 255
    assert to_gray(rgb)[0, 0] == round(255 * 0.299)


def test_3d_input_is_refused_with_a_reason():
    with pytest.raises(Quarantine) as e:
        to_storable(np.zeros((2, 2, 2), np.uint8))
    assert e.value.reason == "unsupported_pixel_format"
