"""How a connection builds its views: only those a query names (and what they read), the same rows as a connection
with every view, and globs of files read from one schema unless an old file has another."""

from __future__ import annotations

import shutil

import pyarrow as pa
import pyarrow.parquet as pq

from catalog import db
from catalog.current import fresh_snapshot
from catalog.parts import write_table
from catalog.schema import SIGNATURE
from catalog.workspace import Workspace

DERIVED_IMAGES = {"images", "occurrences", "current_files", "file_versions", "splits", "dup_groups", "quality",
                  "leakage"}
QUESTIONS = ["SELECT modality, body_part, count(*) FROM images GROUP BY ALL ORDER BY ALL",
             "SELECT status, reason, count(*) FROM files GROUP BY ALL ORDER BY ALL",
             "SELECT i.split, l.task, l.value, count(*) FROM images i JOIN labels l USING (image_id) GROUP BY ALL ORDER BY ALL",
             "SELECT kind, status, count(*) FROM runs GROUP BY ALL ORDER BY ALL",
             "WITH x AS (SELECT * FROM Images) SELECT count(*), count(DISTINCT file_id) FROM x"]


def _views(con) -> set[str]:
    return {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}


def test_a_connection_creates_the_views_asked_for_and_those_they_read(phantom_workspace):
    ws, _ = phantom_workspace
    assert fresh_snapshot(ws) is not None
    with db.connection(ws, views={"images"}) as con:
        assert _views(con) == {"images"}  # the snapshot's file: nothing else to bind
    with db.connection(ws, derived=True, views={"images"}) as con:
        assert _views(con) == DERIVED_IMAGES
    with db.connection(ws, views=set()) as con:
        assert _views(con) == set()
    with db.connection(ws) as con:
        assert _views(con) == set(db.VIEWS) - {"lineage"}
    with db.connection(ws, private=True) as con:
        assert _views(con) == set(db.VIEWS)


def test_a_query_names_its_views_and_answers_as_on_every_view(phantom_workspace):
    ws, _ = phantom_workspace
    assert db.views_named(QUESTIONS[2]) == {"images", "labels"}
    assert db.views_named("SELECT n_images FROM files WHERE 'signatures' <> ''") == {"files", "signatures"}
    assert db.views_named("SELECT 1") == set()
    for listing in ("SHOW TABLES", "SELECT * FROM information_schema.tables", "SELECT * FROM duckdb_views()"):
        assert db.views_named(listing) is None
    with db.connection(ws) as con:
        every = [con.execute(sql).fetchall() for sql in QUESTIONS]
    assert [db.query(ws, sql)[1] for sql in QUESTIONS] == every and all(every)
    shown = {r[0] for r in db.query(ws, "SHOW TABLES")[1]}
    assert shown == set(db.VIEWS) - {"lineage"}


def test_a_stale_snapshot_derives_what_a_query_names(phantom_workspace, tmp_path):
    src, _ = phantom_workspace
    ws = Workspace.open(shutil.copytree(src.root, tmp_path / "workspace"))
    with db.connection(ws) as con:
        fresh = [con.execute(sql).fetchall() for sql in QUESTIONS[:3]]
    (ws.catalog_dir / "current" / "CURRENT.json").unlink()
    assert fresh_snapshot(ws) is None
    assert [db.query(ws, sql)[1] for sql in QUESTIONS[:3]] == fresh


def _signature_rows(ids: list[str]) -> list[dict]:
    return [{"image_id": i, "emb": b"\x00" * 4, "emb_flip": b"\x01" * 4,
             **{f.name: 0.5 for f in SIGNATURE if f.name not in ("image_id", "emb", "emb_flip")}} for i in ids]


def test_files_of_one_schema_are_read_without_a_union_by_name(ws):
    for k in range(3):
        write_table(ws.signatures_dir / f"2026010{k}T000000000000-aaaaaa-000000.parquet",
                    _signature_rows([f"{k}a", f"{k}b"]), SIGNATURE, ws.staging_dir)
    with db.connection(ws, views={"signatures"}) as con:
        sql = con.execute("SELECT sql FROM duckdb_views() WHERE view_name = 'signatures'").fetchall()[0][0]
        rows = con.execute("SELECT image_id, emb, frac_at_full FROM signatures ORDER BY image_id").fetchall()
    assert "union_by_name" not in sql
    assert rows == [(f"{k}{x}", b"\x00" * 4, 0.5) for k in range(3) for x in "ab"]


def test_files_written_before_a_schema_change_are_unioned_by_name(ws):
    old = pa.schema([f for f in SIGNATURE if f.name != "frac_at_full"])  # as if the column came later
    rows = _signature_rows(["old1", "old2"])
    pq.write_table(pa.Table.from_pylist([{k: v for k, v in r.items() if k in old.names} for r in rows], schema=old),
                   ws.signatures_dir / "20250101T000000000000-aaaaaa-000000.parquet")
    write_table(ws.signatures_dir / "20260101T000000000000-bbbbbb-000000.parquet", _signature_rows(["new1"]),
                SIGNATURE, ws.staging_dir)
    with db.connection(ws, views={"signatures"}) as con:
        sql = con.execute("SELECT sql FROM duckdb_views() WHERE view_name = 'signatures'").fetchall()[0][0]
        got = con.execute("SELECT image_id, frac_at_full FROM signatures ORDER BY image_id").fetchall()
        columns = [r[0] for r in con.execute("DESCRIBE signatures").fetchall()]
    assert "union_by_name" in sql and columns == SIGNATURE.names
    assert got == [("new1", 0.5), ("old1", None), ("old2", None)]


def test_a_file_removed_since_the_listing_is_read_by_the_union(ws, monkeypatch):
    for k in range(2):
        write_table(ws.signatures_dir / f"2026010{k}T000000000000-aaaaaa-000000.parquet", _signature_rows([f"{k}a"]),
                    SIGNATURE, ws.staging_dir)
    listed = sorted(str(p) for p in ws.signatures_dir.glob("*.parquet"))
    gone = str(ws.signatures_dir / "20251231T000000000000-cccccc-000000.parquet")  # as a compaction's cleanup
    monkeypatch.setattr(db.glob, "glob", lambda pattern: [gone, *listed])
    with db.connection(ws, views={"signatures"}) as con:
        sql = con.execute("SELECT sql FROM duckdb_views() WHERE view_name = 'signatures'").fetchall()[0][0]
        assert "union_by_name" in sql
        assert con.execute("SELECT image_id FROM signatures ORDER BY ALL").fetchall() == [("0a",), ("1a",)]
