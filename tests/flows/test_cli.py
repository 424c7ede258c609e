"""The `ortho` command line through real Prefect flows (one session-wide test harness)."""

import json
import subprocess
import sys
import textwrap

import pytest
from typer.testing import CliRunner

from flows.cli import app

runner = CliRunner()
COMMANDS = [[], ["sources"], ["sources", "add"], ["sources", "list"], ["ingest"], ["sql"], ["status"], ["lineage"],
            ["demo"], ["phantom"], ["shards"], ["shards", "build"], ["shards", "list"], ["shards", "verify"],
            ["shards", "show"], ["curate"], ["tasks"], ["tasks", "list"], ["export"], ["export", "dicom"], ["catalog"], ["catalog", "compact"], ["pretrain"]]
NO_WORKSPACE = (["phantom"], ["shards", "verify"], ["shards", "show"])  # they take a path


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c) or "ortho")
def test_every_command_has_help(cmd):
    result = runner.invoke(app, cmd + ["--help"])
    assert result.exit_code == 0 and "Usage" in result.output
    if cmd and cmd not in (["sources"], ["shards"], ["tasks"], ["export"], ["catalog"]):
        assert "--workspace" in result.output or cmd in NO_WORKSPACE


@pytest.mark.prefect
@pytest.mark.slow
def test_sources_ingest_sql_status_lineage(tmp_path, phantom_root, prefect_harness):
    ws = str(tmp_path / "w")
    r = runner.invoke(app, ["sources", "add", "pub", str(phantom_root / "public"), "--kind", "public",
                            "--labels", "folder:kl_grade", "--path-pattern",
                            r"(?P<split>train|val)/(?P<label>\d)/(?P<patient>\d+)(?P<laterality>[LR])\.png",
                            "--body-part", "knee", "--modality", "DX", "--workspace", ws])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["sources", "add", "pub", str(phantom_root), "--workspace", ws])
    assert r.exit_code == 2 and "exists" in r.output
    r = runner.invoke(app, ["ingest", "--runner", "threads", "--workers", "2", "--batch-size", "5", "--workspace", ws])
    assert r.exit_code == 0, r.output
    assert "ingest summary" in r.output
    r = runner.invoke(app, ["sql", "SELECT body_part, laterality, count(*) AS n FROM images GROUP BY ALL ORDER BY ALL",
                            "--format", "json", "--workspace", ws])
    assert json.loads(r.output) == [{"body_part": "knee", "laterality": "L", "n": 6}, {"body_part": "knee", "laterality": "R", "n": 6}]
    r = runner.invoke(app, ["sql", "SELECT status, count(*) FROM files GROUP BY ALL", "--format", "csv", "--workspace", ws])
    assert r.output.splitlines()[0] == "status,count_star()" and "ingested,12" in r.output
    out = tmp_path / "images.parquet"
    r = runner.invoke(app, ["sql", "SELECT * FROM images", "--format", "parquet", "--out", str(out), "--workspace", ws])
    import pyarrow.parquet as pq

    assert r.exit_code == 0 and pq.read_table(out).num_rows == 12
    r = runner.invoke(app, ["sql", "SELECT nonsense FROM nowhere", "--workspace", ws])
    assert r.exit_code == 2 and "error" in r.output
    r = runner.invoke(app, ["status", "--json", "--workspace", ws])
    status = json.loads(r.output)
    assert status["labels"] == {"kl_grade": 12} and status["recent_runs"][0]["status"] == "completed"
    fid = json.loads(runner.invoke(app, ["sql", "SELECT file_id FROM files LIMIT 1", "--format", "json", "--workspace", ws]).output)[0]["file_id"]
    r = runner.invoke(app, ["lineage", fid, "--workspace", ws])
    assert r.exit_code == 0 and ".png" in r.output
    # a second ingest adds nothing
    r = runner.invoke(app, ["ingest", "pub", "--runner", "threads", "--workspace", ws])
    assert r.exit_code == 0
    assert runner.invoke(app, ["sql", "SELECT count(*) AS n FROM file_versions", "--format", "json", "--workspace", ws]).output.count('"n": 12') == 1
    # shards through the Prefect flow, then list / show / verify, and a corrupted shard fails verify
    r = runner.invoke(app, ["shards", "build", "knee-v1", "--query", "SELECT image_id FROM images WHERE source_split='train'",
                            "--samples-per-shard", "3", "--workspace", ws])
    assert r.exit_code == 0, r.output
    manifest = tmp_path / "w" / "shards" / "knee-v1" / "manifest.json"
    assert json.loads(manifest.read_text())["samples"] == 8
    assert "knee-v1" in runner.invoke(app, ["shards", "list", "--workspace", ws]).output
    assert "body_part" in runner.invoke(app, ["shards", "show", str(manifest)]).output
    assert runner.invoke(app, ["shards", "verify", str(manifest)]).exit_code == 0
    shard = manifest.parent / "shard-000001.tar"
    shard.write_bytes(shard.read_bytes()[:-512])
    r = runner.invoke(app, ["shards", "verify", str(manifest)])
    assert r.exit_code == 1 and "shard-000001.tar" in r.output
    r = runner.invoke(app, ["shards", "build", "bad", "--query", "SELECT 1 AS x", "--workspace", ws])
    assert r.exit_code == 2 and "image_id" in r.output


def test_a_second_writer_gets_a_clear_message(tmp_path, phantom_root):
    from catalog.workspace import Workspace
    from ingest.sources import Source, add_source

    ws = Workspace.open(tmp_path / "w")
    add_source(ws, Source("pub", str(phantom_root / "public"), "public"))
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from catalog.workspace import Workspace
        with Workspace.open({str(ws.root)!r}).write_lock():
            print("held", flush=True)
            time.sleep(30)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        r = runner.invoke(app, ["ingest", "--runner", "threads", "--workspace", str(ws.root)])
        assert r.exit_code == 75
        assert "busy" in r.output and f"pid {holder.pid}" in r.output
    finally:
        holder.kill()
        holder.wait()
