import hashlib
import os
import threading

import pytest

from catalog.files import atomic_path, atomic_write, file_sha256, is_remote, local_path, read_bytes


def test_atomic_write_replaces_whole(tmp_path):
    target = tmp_path / "a.json"
    atomic_write(target, "first")
    atomic_write(target, b"second")
    assert target.read_bytes() == b"second"
    assert os.listdir(tmp_path) == ["a.json"]


def test_two_concurrent_writers_of_one_path_both_succeed_and_one_wins_whole(tmp_path):
    target = tmp_path / "shared.bin"
    payloads = [bytes([i]) * (1 << 20) for i in (1, 2)]
    both_written = threading.Barrier(2)
    errors = []

    def write(data):
        try:
            with atomic_path(target) as tmp:
                tmp.write_bytes(data)
                both_written.wait(timeout=10)  # both temporaries exist at once: a fixed name would collide here
        except BaseException as e:  # pragma: no cover - the failure this test looks for
            errors.append(e)

    threads = [threading.Thread(target=write, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert target.read_bytes() in payloads
    assert os.listdir(tmp_path) == ["shared.bin"]


def test_a_failed_write_leaves_the_old_content_and_no_temporary(tmp_path):
    target, staging = tmp_path / "out" / "t.txt", tmp_path / "staging"
    target.parent.mkdir()
    staging.mkdir()
    atomic_write(target, "old")
    for tmp_dir in (None, staging):
        with pytest.raises(RuntimeError):
            with atomic_path(target, tmp_dir) as tmp:
                tmp.write_text("half")
                raise RuntimeError("killed")
        assert target.read_text() == "old"
        assert os.listdir(target.parent) == ["t.txt"] and os.listdir(staging) == []


def test_temporaries_go_to_tmp_dir_with_a_unique_hidden_name(tmp_path):
    names = set()
    (tmp_path / "staging").mkdir()
    for _ in range(3):
        with atomic_path(tmp_path / "x.parquet", tmp_path / "staging") as tmp:
            assert tmp.parent == tmp_path / "staging" and tmp.name.startswith(".x.parquet.") and tmp.suffix == ".tmp"
            assert not tmp.name.endswith(".parquet")  # a glob for *.parquet never sees a half-written file
            names.add(tmp.name)
            tmp.write_text("x")
    assert len(names) == 3


def test_atomic_write_mode(tmp_path):
    atomic_write(tmp_path / "secret.json", "{}", mode=0o600)
    assert (tmp_path / "secret.json").stat().st_mode & 0o077 == 0


def test_file_sha256(tmp_path):
    data = os.urandom(3 << 20)
    (tmp_path / "f").write_bytes(data)
    assert file_sha256(tmp_path / "f") == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("location, remote", [
    ("/data/knees", False), ("relative/dir", False), ("file:///data/knees", False), ("FILE:///x", False),
    ("s3://bucket/knees", True), ("memory://x", True), ("dicomweb+https://pacs:443/dicom-web", True),
    ("pipe:curl -s https://host/{}", True), ("/data/odd://name", False),
])
def test_is_remote(location, remote):
    assert is_remote(location) is remote


def test_read_bytes_local_and_fsspec(tmp_path):
    fsspec = pytest.importorskip("fsspec")
    (tmp_path / "a.bin").write_bytes(b"0123456789")
    assert read_bytes(str(tmp_path), "a.bin", 4) == b"01234"  # one byte past the limit shows the excess
    assert read_bytes(f"file://{tmp_path}", "a.bin", 100) == b"0123456789"
    assert local_path(f"file://{tmp_path}") == str(tmp_path)
    fsspec.filesystem("memory").pipe("/files-test/a.bin", b"abc")
    assert read_bytes("memory://files-test", "a.bin", 10) == b"abc"
