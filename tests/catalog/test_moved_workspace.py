"""A workspace is a folder: copied or moved, it reads its own files (catalog.duckdb's views included), and nothing
it keeps points at where it was."""

import shutil

import duckdb
from typer.testing import CliRunner

from catalog import db
from catalog.publish import publish
from catalog.workspace import Workspace
from flows.cli import app


def _counts(con) -> tuple:
    return con.execute("SELECT (SELECT count(*) FROM images), (SELECT count(*) FROM files), "
                       "(SELECT count(*) FROM labels)").fetchone()


def test_a_moved_workspace_reads_its_own_files(phantom_workspace, tmp_path):
    source, _ = phantom_workspace
    first = Workspace.open(shutil.copytree(source.root, tmp_path / "first" / "workspace"))
    publish(first)  # catalog.duckdb written where the workspace was
    with db.connection(first) as con:
        before = _counts(con)
    assert before[0] > 0 and before[2] > 0

    moved_root = shutil.move(str(first.root), str(tmp_path / "elsewhere"))
    assert not first.root.exists()
    moved = Workspace.open(moved_root)

    with db.connection(moved) as con:
        assert _counts(con) == before
    with duckdb.connect(str(moved.duckdb_path), read_only=True) as con:
        view_sql = " ".join(r[0] for r in con.execute("SELECT sql FROM duckdb_views() WHERE NOT internal").fetchall())
        assert str(tmp_path) not in view_sql and "read_parquet('catalog/" in view_sql
        con.execute(f"SET file_search_path = '{moved.root}'")
        assert _counts(con) == before
    r = CliRunner().invoke(app, ["sql", "SELECT count(*) AS n FROM images", "--format", "csv", "-w", str(moved.root)])
    assert r.exit_code == 0 and r.output == f"n\n{before[0]}\n"


def test_a_run_keeps_its_manifest_relative_inside_the_workspace(tmp_path):
    from training.inputs import run_manifest

    run_dir = tmp_path / "runs" / "r1"
    assert run_manifest(run_dir, {"manifest": "../../shards/a/manifest.json"}) == \
        str(run_dir / "../../shards/a/manifest.json")
    assert run_manifest(run_dir, {"manifest": "/data/a/manifest.json"}) == "/data/a/manifest.json"
    assert run_manifest(run_dir, {"manifest": "s3://bucket/a/manifest.json"}) == "s3://bucket/a/manifest.json"
