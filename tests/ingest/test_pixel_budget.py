"""One pixel budget, enforced before decoding: declared sizes read from PNG IHDR, JPEG SOF and JPEG 2000 SIZ (raw and
in a JP2 box); a codestream that declares another size than its DICOM header is quarantined
(`declared_size_mismatch`) with peak memory under the budget; a FIFO in a source tree is a `files` row
(`not_regular_file`), never opened."""

import io
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.uid import JPEG2000Lossless

from catalog import db, pixel_budget
from catalog.codestreams import declared_size
from catalog.pixel_budget import Limits, PixelsRefused, check_codestream
from catalog.pixels import decode_png, encode_png
from catalog.deid import Pseudonymizer
from ingest.readers import ReadContext, read_frames
from ingest.reasons import Quarantine
from tests.ingest.dicom_factory import encapsulated_dicom

ROOT = Path(__file__).resolve().parents[2]


def _encoded(fmt: str, shape=(48, 80), mode="L") -> bytes:
    arr = (np.arange(shape[0] * shape[1]) % 251).reshape(shape).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, fmt, **({"irreversible": False} if fmt == "JPEG2000" else {}))
    return buf.getvalue()


def _j2k(shape=(64, 64)) -> bytes:
    buf = io.BytesIO()
    arr = (np.arange(shape[0] * shape[1]) % 251).reshape(shape).astype(np.uint8)
    Image.fromarray(arr).save(buf, "JPEG2000", no_jp2=True)
    return buf.getvalue()


def _lying_j2k(rows: int, cols: int) -> bytes:
    data = bytearray(_j2k())
    data[8:16] = struct.pack(">II", cols, rows)  # SIZ's Xsiz, Ysiz (offsets stay 0)
    return bytes(data)


def _ctx(limits: Limits = Limits()) -> ReadContext:
    return ReadContext(Pseudonymizer(b"s" * 32), "f" * 16, limits=limits)


def _j2k_dicom(stream: bytes, rows: int = 64, cols: int = 64) -> bytes:
    return encapsulated_dicom(stream, JPEG2000Lossless, rows, cols)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "JPEG2000"])
def test_declared_sizes_are_read_from_the_codestream(fmt):
    got = declared_size(_encoded(fmt))
    assert (got.rows, got.cols, got.samples) == (48, 80, 1)
    raw = declared_size(_j2k((30, 70)))
    assert (raw.codec, raw.rows, raw.cols, raw.bits) == ("j2k", 30, 70, 8)
    sixteen = declared_size(encode_png(np.zeros((7, 9), np.uint16)))
    assert (sixteen.rows, sixteen.cols, sixteen.bits, sixteen.decoded_bytes) == (7, 9, 16, 7 * 9 * 2)


def test_a_codestream_that_lies_about_its_size_is_refused_before_decoding():
    lie = _lying_j2k(60000, 60000)
    with pytest.raises(PixelsRefused) as e:
        check_codestream(lie, 64, 64)
    assert e.value.reason == "declared_size_mismatch"
    with pytest.raises(Quarantine) as q:
        list(read_frames(_j2k_dicom(lie), "x.dcm", _ctx())[1])
    assert q.value.reason == "declared_size_mismatch"
    # the honest file decodes
    frames = list(read_frames(_j2k_dicom(_j2k()), "x.dcm", _ctx())[1])
    assert frames[0].pixels.shape == (64, 64)


def test_a_png_declaring_more_than_the_budget_is_refused_from_its_header():
    bomb = bytearray(encode_png(np.zeros((16, 16), np.uint16)))
    bomb[16:24] = struct.pack(">II", 60000, 60000)
    bomb[29:33] = struct.pack(">I", zlib.crc32(bytes(bomb[12:29])))
    with pytest.raises(Quarantine) as q:
        list(read_frames(bytes(bomb), "bomb.png", _ctx())[1])
    assert q.value.reason == "absurd_dimensions"
    # stored objects are checked against the catalog's size, and the budget in force, before decoding
    png = encode_png(np.ones((20, 30), np.uint16))
    assert decode_png(png, 20, 30).shape == (20, 30)
    with pytest.raises(PixelsRefused, match="declared_size_mismatch"):
        decode_png(png, 30, 20)
    with pytest.raises(PixelsRefused, match="absurd_dimensions"):
        decode_png(png, limits=Limits(max_pixels_per_image=599))
    # Pillow's own default limit is never what refuses an image within ours
    pixel_budget.configure(Limits(max_pixels_per_image=1 << 30))
    try:
        from PIL import Image as PILImage

        assert PILImage.MAX_IMAGE_PIXELS is None
    finally:
        pixel_budget.configure(None)


_PEAK = """
import resource, sys
from ingest.readers import Limits, ReadContext, read_frames
from ingest.reasons import Quarantine
from catalog.deid import Pseudonymizer
data = open(sys.argv[1], "rb").read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    list(read_frames(data, sys.argv[2], ReadContext(Pseudonymizer(b"s" * 32), "f" * 16, limits=Limits(max_decoded_bytes=64 << 20)))[1])
    reason = "ok"
except Quarantine as q:
    reason = q.reason
print(reason, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
"""


def test_hostile_files_are_quarantined_with_peak_memory_under_the_budget(tmp_path):
    cases = {"lie.dcm": _j2k_dicom(_lying_j2k(60000, 60000)), "big.dcm": _j2k_dicom(_lying_j2k(9000, 9000), 9000, 9000)}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        out = subprocess.run([sys.executable, "-c", _PEAK, str(tmp_path / name), name], capture_output=True, text=True,
                             env=env, timeout=120, cwd=ROOT)
        reason, grew = out.stdout.split()
        assert reason == {"lie.dcm": "declared_size_mismatch", "big.dcm": "absurd_dimensions"}[name], out.stderr
        assert int(grew) < 64 << 20


def test_a_fifo_in_a_source_tree_is_a_row_and_never_opened(ws, tmp_path):
    from ingest.run import ingest_source
    from ingest.sources import Source, add_source

    folder = tmp_path / "src"
    folder.mkdir()
    Image.fromarray((np.arange(64 * 64) % 200).reshape(64, 64).astype(np.uint8)).save(folder / "a.png")
    os.mkfifo(folder / "pipe.png")
    os.symlink(folder / "pipe.png", folder / "link-to-pipe.png")
    add_source(ws, Source("f", str(folder), "public", burned_in="off"))
    ingest_source(ws, "f")
    rows = db.query(ws, "SELECT status, reason FROM files ORDER BY ALL")[1]
    assert rows == [("ingested", None), ("quarantined", "not_regular_file"), ("quarantined", "not_regular_file")]
