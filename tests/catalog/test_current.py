"""The materialised current state: published after each commit, equal to the derivation, never used stale."""

from __future__ import annotations

import shutil

from catalog import db
from catalog.current import TABLES, fingerprint, fresh_snapshot
from catalog.publish import materialise
from catalog.workspace import Workspace

ORDER = {"images": "image_id", "files": "source, file_id", "labels": "image_id, task, value, source"}


def tables(ws: Workspace, derived: bool) -> dict:
    with db.connection(ws, derived=derived) as con:
        return {t: con.execute(f"SELECT * FROM {t} ORDER BY {ORDER[t]}").fetchall() for t in TABLES}


def test_an_ingest_publishes_a_snapshot_equal_to_the_derived_views(phantom_workspace):
    ws, _ = phantom_workspace
    snapshot = fresh_snapshot(ws)
    assert snapshot is not None
    with db.connection(ws) as con:  # the views read the snapshot's files
        definitions = dict(con.execute("SELECT view_name, sql FROM duckdb_views() WHERE NOT internal").fetchall())
    assert all(str(snapshot / f"{t}.parquet") in definitions[t] for t in TABLES)
    assert "row_number()" in definitions["occurrences"]  # the derivation stays, for ingest's own queries
    expected = tables(ws, derived=True)
    assert tables(ws, derived=False) == expected and len(expected["images"]) > 0


def test_a_change_without_its_snapshot_falls_back_to_the_derivation(phantom_workspace, tmp_path):
    src, _ = phantom_workspace
    ws = Workspace.open(shutil.copytree(src.root, tmp_path / "workspace"))
    assert fresh_snapshot(ws) is not None
    before = fingerprint(ws)
    victim = sorted(ws.parts_dir.iterdir())[0]  # as if a commit had changed the parts and died before publishing
    shutil.rmtree(victim)
    assert fingerprint(ws) != before and fresh_snapshot(ws) is None
    derived = tables(ws, derived=True)
    assert tables(ws, derived=False) == derived
    materialise(ws)
    assert fresh_snapshot(ws) is not None and tables(ws, derived=False) == derived
    assert len([p for p in (ws.catalog_dir / "current").iterdir() if p.is_dir()]) == 2  # published + previous


def test_a_materialisation_that_fails_is_logged_and_leaves_the_catalog_exact(phantom_workspace, tmp_path, monkeypatch,
                                                                             ortho_log):
    import duckdb

    from catalog import current, publish

    src, _ = phantom_workspace
    ws = Workspace.open(shutil.copytree(src.root, tmp_path / "workspace"))
    shutil.rmtree(sorted(ws.parts_dir.iterdir())[0])  # a change that needs a new snapshot

    def out_of_memory(ws):
        raise duckdb.OutOfMemoryException("Out of Memory Error: could not allocate block of size 256KiB")

    monkeypatch.setattr(publish, "materialise", out_of_memory)
    publish.publish(ws)  # does not raise: the ingest that called it has committed
    assert "could not be materialised (OutOfMemoryException)" in ortho_log.text
    assert current.fresh_snapshot(ws) is None and tables(ws, derived=False) == tables(ws, derived=True)
