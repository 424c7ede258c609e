"""A corpus of hostile inputs: every file accounted for, nothing crashes, memory stays bounded."""

import numpy as np

from catalog import db
from ingest.readers import Limits
from ingest.run import ingest_source
from ingest.sources import Source, add_source
from tests.ingest.dicom_factory import deep_sequence_bytes, make_dicom
from tests.ingest.file_factory import nifti_bytes


def build_corpus(root):
    root.mkdir()
    good = make_dicom(np.arange(64, dtype=np.uint16).reshape(8, 8))
    (root / "good.dcm").write_bytes(good)
    (root / "zero.dcm").write_bytes(b"")
    (root / "truncated.dcm").write_bytes(good[: len(good) - 50])
    (root / "random.dcm").write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    (root / "nopixels.dcm").write_bytes(make_dicom(None))
    (root / "deep.dcm").write_bytes(make_dicom(None) + deep_sequence_bytes(3000))
    (root / "bomb.nii.gz").write_bytes(nifti_bytes(np.zeros((512, 512, 128), np.uint8)))  # 32 MiB declared
    (root / "noext").write_bytes(good)  # DICOM without an extension: read by content
    (root / "a").mkdir()
    (root / "a" / "loop").symlink_to(root)  # a symlink loop
    (root / "dangling").symlink_to(root / "does-not-exist")
    (root / "same").mkdir()
    (root / "same" / "good.dcm").write_bytes(good)  # the same name in another folder: both accounted for
    return 12 - 1  # files on disk, minus the loop (a folder link, reported once)


def test_hostile_corpus(ws, tmp_path):
    n = build_corpus(tmp_path / "src")
    add_source(ws, Source("hostile", str(tmp_path / "src"), "internal"))
    summary = ingest_source(ws, "hostile", limits=Limits(max_decoded_bytes=8 << 20))
    rows = dict(db.query(ws, "SELECT reason, count(*) FROM files WHERE status = 'quarantined' GROUP BY ALL")[1])
    status = dict(db.query(ws, "SELECT status, count(*) FROM files GROUP BY ALL")[1])
    assert summary.files_seen == sum(status.values()) == n
    assert status["ingested"] == 1 and status["duplicate"] == 2
    assert rows["empty_file"] == 1 and rows["truncated"] == 1 and rows["absurd_dimensions"] == 1
    assert rows["symlink_loop"] == 1 and rows["broken_symlink"] == 1
    assert rows.get("invalid_dicom", 0) + rows.get("unrecognized_format", 0) >= 1
    assert rows.get("no_pixel_data", 0) + rows.get("invalid_dicom", 0) + rows.get("non_image_object", 0) >= 2


def test_unreadable_file_is_quarantined(ws, tmp_path, monkeypatch):
    import ingest.source_kinds

    src = tmp_path / "src"
    src.mkdir()
    (src / "secret.dcm").write_bytes(make_dicom(np.zeros((4, 4), np.uint16)))

    def deny(*a, **k):
        raise PermissionError(13, "Permission denied", str(src / "secret.dcm"))

    monkeypatch.setattr(ingest.source_kinds, "read_bytes", deny)
    add_source(ws, Source("s", str(src), "internal"))
    ingest_source(ws, "s")
    assert db.query(ws, "SELECT status, reason, detail FROM files")[1] == [("quarantined", "permission_denied", "file cannot be opened")]


def test_fsspec_location(ws):
    import fsspec

    fs = fsspec.filesystem("memory")  # one per process: keep this test's files under their own bucket
    fs.pipe("/ingest-bucket/exam1/a.dcm", make_dicom(np.ones((4, 4), np.uint16)))
    fs.pipe("/ingest-bucket/exam1/b.dcm", make_dicom(np.full((4, 4), 2, np.uint16)))
    add_source(ws, Source("mem", "memory://ingest-bucket", "internal"))
    ingest_source(ws, "mem")
    assert db.query(ws, "SELECT status, count(*) FROM files GROUP BY ALL")[1] == [("ingested", 2)]
    assert ingest_source(ws, "mem").files_skipped == 2


def test_a_vanished_source_fails_with_a_clear_message_naming_no_path(ws, tmp_path):
    import shutil

    import pytest

    from ingest.scan import SourceUnavailable

    src = tmp_path / "Zorblatt_export"
    src.mkdir()
    add_source(ws, Source("gone", str(src), "internal"))
    shutil.rmtree(src)
    with pytest.raises(SourceUnavailable) as e:
        ingest_source(ws, "gone")
    assert "Zorblatt" not in str(e.value) and "cannot be read" in str(e.value)
    assert db.query(ws, "SELECT status FROM runs")[1] == [("failed",)]
