"""`ortho sql` reads the catalog's views and nothing else: no files (the private lineage included), no DDL, no
writes, one-line refusals; every public view stays queryable; the lineage stays behind `ortho lineage`."""

import pytest
from typer.testing import CliRunner

from catalog import db
from flows.cli import app

runner = CliRunner()


def _sql(ws, query: str, *extra: str):
    return runner.invoke(app, ["sql", query, *extra, "--workspace", str(ws.root)])


@pytest.mark.parametrize("query", [
    "SELECT * FROM read_parquet('{lineage}/*.parquet')",
    "SELECT * FROM read_parquet('{root}/catalog/../private/lineage/*.parquet')",
    "SELECT * FROM read_csv('{secret}')",
    "SELECT * FROM read_text('{secret}')",
    "SELECT * FROM glob('{root}/private/*')",
    "ATTACH '{root}/other.db'",
    "COPY (SELECT 1) TO '{root}/out.csv'",
    "INSTALL httpfs",
    "LOAD httpfs",
    "DROP VIEW images",
    "CREATE TABLE t AS SELECT 1",
    "CREATE OR REPLACE VIEW images AS SELECT 1",
    "SET enable_external_access = true",
    "PRAGMA show_tables",
    "SELECT 1; DROP VIEW images",
])
def test_what_is_not_a_query_of_the_views_is_refused_in_one_line(phantom_workspace, query):
    ws, _ = phantom_workspace
    q = query.format(lineage=ws.lineage_dir, root=ws.root, secret=ws.root / "private" / "secret.key")
    r = _sql(ws, q)
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), r.output
    assert "private" not in lines[0] and "secret" not in lines[0] and str(ws.root) not in lines[0]
    assert not (ws.root / "other.db").exists() and not (ws.root / "out.csv").exists()
    with db.connection(ws) as con:  # the catalog is as it was
        assert con.execute("SELECT count(*) FROM images").fetchone()[0] > 0


@pytest.mark.parametrize("view", [v for v in db.VIEWS if v != "lineage"])
def test_every_public_view_is_queryable(phantom_workspace, view):
    ws, _ = phantom_workspace
    r = _sql(ws, f"SELECT count(*) AS n FROM {view}", "--format", "csv")
    assert r.exit_code == 0 and r.output.startswith("n\n"), r.output


def test_show_tables_lists_the_views_and_out_files_are_written(phantom_workspace, tmp_path):
    ws, _ = phantom_workspace
    r = _sql(ws, "SHOW TABLES", "--format", "csv")
    assert r.exit_code == 0 and {"images", "files", "labels"} <= set(r.output.split()) and "lineage" not in r.output
    for fmt in ("csv", "parquet"):
        out = tmp_path / f"ids.{fmt}"
        r = _sql(ws, "SELECT image_id FROM images ORDER BY image_id LIMIT 3;", "--format", fmt, "--out", str(out))
        assert r.exit_code == 0 and out.stat().st_size > 0, r.output
    assert (tmp_path / "ids.csv").read_bytes().count(b"\n") == 4 and b"\r" not in (tmp_path / "ids.csv").read_bytes()


def test_the_lineage_stays_behind_ortho_lineage(phantom_workspace):
    ws, _ = phantom_workspace
    with db.connection(ws, private=True) as con:
        file_id = con.execute("SELECT file_id FROM lineage LIMIT 1").fetchone()[0]
    r = runner.invoke(app, ["lineage", file_id, "--workspace", str(ws.root)])
    assert r.exit_code == 0 and f"{file_id}  source=" in r.output
    assert _sql(ws, "SELECT * FROM lineage").exit_code == 2
