"""The failure firewall without Prefect: names that are not UTF-8 land like any other file and stay byte-exact in
the private lineage; an unexpected exception in a reader quarantines that file only, and its text lands nowhere."""

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from catalog import db, schema
from catalog.workspace import Workspace
from ingest.run import ingest_source
from ingest.sources import Source
from tests.firewall_tree import (LATIN1_NAME, NEEDLES, PATIENT_DIR, PLANTED, UTF8_NAME, add_tree_source,
                                 file_statuses, raising_for_one_file, write_tree)
from tests.phi_scan import scan_workspace


def test_a_name_that_is_not_utf8_lands_and_stays_byte_exact_in_lineage(tmp_path, ortho_log):
    from flows.cli import app

    root = write_tree(tmp_path / "tree")
    ws = Workspace.open(tmp_path / "w")
    add_tree_source(ws, root)
    summary = ingest_source(ws, "src", batch_size=4)
    assert summary.result.files == 6 and not summary.result.quarantined
    statuses = file_statuses(ws)
    assert statuses["M\\xfcller_knee.dcm"][0] == "ingested" and statuses[UTF8_NAME][0] == "ingested"
    con = db.connect(ws, private=True)
    try:
        rows = dict(con.execute("SELECT path_bytes, file_id FROM lineage").fetchall())
    finally:
        con.close()
    latin1 = f"{PATIENT_DIR}/".encode() + LATIN1_NAME
    assert latin1 in rows and f"{PATIENT_DIR}/{UTF8_NAME}".encode() in rows
    assert scan_workspace(ws.root, NEEDLES) == []
    assert not any(n in ortho_log.text for n in NEEDLES)
    r = CliRunner().invoke(app, ["lineage", rows[latin1], "--workspace", str(ws.root)])
    assert r.exit_code == 0 and f"{PATIENT_DIR}/M\\xfcller_knee.dcm" in r.output, r.output
    # a terminal that only takes ASCII gets escapes, not a crash
    ortho = Path(sys.executable).with_name("ortho")
    env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    out = subprocess.run([str(ortho), "lineage", rows[f"{PATIENT_DIR}/{UTF8_NAME}".encode()], "--workspace",
                          str(ws.root)], capture_output=True, env=env, timeout=120)
    assert out.returncode == 0 and b"J\\xf6rg_knee.dcm" in out.stdout, out.stderr[-2000:]


def test_the_export_reads_a_file_by_its_exact_bytes(tmp_path):
    from curation.export_dicom import export_selection

    root = write_tree(tmp_path / "tree")
    ws = Workspace.open(tmp_path / "w")
    add_tree_source(ws, root)
    ingest_source(ws, "src")
    result = export_selection(ws, "SELECT image_id FROM images WHERE format = 'dicom'", tmp_path / "export")
    assert len(result.written) == 2 and "unreadable" not in result.skipped


def test_a_batch_file_keeps_a_name_that_is_not_utf8(tmp_path):
    from ingest.batch import BatchSpec
    from ingest.scan import ScanEntry

    relpath = os.fsdecode(b"a/" + LATIN1_NAME)
    spec = BatchSpec("src", "r", 0, "p", [ScanEntry(relpath, 3, 4)])
    spec.save(tmp_path / "b.json")
    back = BatchSpec.load(tmp_path / "b.json")
    assert back == spec and os.fsencode(back.entries[0].relpath) == b"a/" + LATIN1_NAME


def test_lineage_parts_written_before_path_bytes_still_read(ws):
    old = pa.schema([f for f in schema.LINEAGE if f.name != "path_bytes"])
    row = dict(source="s", file_id="f" * 16, file_version="1-2", location="/x", path="a/b.dcm", size=1, mtime_ns=2,
               run_id="r")
    pq.write_table(pa.Table.from_pylist([row], schema=old), ws.lineage_dir / "old.parquet")
    con = db.connect(ws, private=True)
    try:
        assert con.execute("SELECT path, path_bytes FROM lineage").fetchall() == [("a/b.dcm", b"a/b.dcm")]
    finally:
        con.close()


def test_an_unexpected_reader_error_quarantines_only_that_file(tmp_path, monkeypatch, ortho_log):
    raising_for_one_file(monkeypatch)
    root = write_tree(tmp_path / "tree")
    ws = Workspace.open(tmp_path / "w")
    add_tree_source(ws, root)
    summary = ingest_source(ws, "src", batch_size=4)
    assert summary.result.files == 6 and dict(summary.result.quarantined) == {"internal_error": 1}
    statuses = file_statuses(ws)
    assert statuses.pop("odd.png") == ("quarantined", "internal_error", "RuntimeError")
    assert {s for s, _, _ in statuses.values()} == {"ingested"} and len(statuses) == 5
    assert scan_workspace(ws.root, NEEDLES) == []
    assert "internal_error - RuntimeError" in ortho_log.text
    assert not any(n in ortho_log.text for n in NEEDLES)


@pytest.mark.parametrize("where", ["hints", "labels", "rows"])
def test_a_failure_outside_the_reader_is_firewalled_too(tmp_path, monkeypatch, where):
    from ingest import batch

    root = write_tree(tmp_path / "tree")
    ws = Workspace.open(tmp_path / "w")
    add_tree_source(ws, root)

    def boom(*args, **kwargs):
        raise ValueError(PLANTED)

    if where == "hints":
        monkeypatch.setattr(Source, "hints", boom)
    elif where == "labels":
        monkeypatch.setattr(batch, "_label_rows", boom)
    else:
        monkeypatch.setattr(batch, "_lineage_row", boom)
    summary = ingest_source(ws, "src")
    assert summary.result.files == 6 and dict(summary.result.quarantined) == {"internal_error": 6}
    assert scan_workspace(ws.root, NEEDLES) == []
