"""The `ortho` command line through real Prefect flows (one session-wide test harness)."""

import json
import subprocess
import sys
import textwrap

import pytest
import typer.main
from typer.testing import CliRunner

from flows.cli import app

runner = CliRunner()


def command_tree(command, path: tuple[str, ...] = ()):
    """(path, command) for the root, every group and every command the app registers."""
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from command_tree(sub, path + (name,))


COMMANDS = list(command_tree(typer.main.get_command(app)))


def test_the_tree_holds_every_documented_command():
    paths = {" ".join(p) for p, _ in COMMANDS}
    assert {"sources add", "ingest", "sql", "curate", "shards build", "shards verify", "pretrain", "evaluate",
            "status", "pipeline", "serve", "demo", "export dicom", "report", "lineage", "tasks list"} <= paths


@pytest.mark.parametrize("path,command", COMMANDS, ids=[" ".join(p) or "ortho" for p, _ in COMMANDS])
def test_every_command_has_help_and_takes_a_workspace(path, command):
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output
    if not hasattr(command, "commands"):  # a group shows its commands
        assert "--workspace" in result.output and any("--workspace" in p.opts for p in command.params)


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
            time.sleep(600)  # killed below; long enough for a slow Prefect start
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        r = runner.invoke(app, ["ingest", "--runner", "threads", "--workspace", str(ws.root)])
        assert r.exit_code == 75, r.output
        assert "busy" in r.output and f"pid {holder.pid}" in r.output
        for args in (["shards", "build", "s", "--query", "SELECT image_id FROM images", "--wait", "0.3"],
                     ["catalog", "compact"]):
            r = runner.invoke(app, [*args, "--workspace", str(ws.root)])
            assert r.exit_code == 75, r.output
            assert r.output.rstrip().splitlines()[-1].startswith(
                f"error: workspace 'w' is busy: another ortho process (pid {holder.pid})")
    finally:
        holder.kill()
        holder.wait()


def test_a_project_error_is_one_line_with_its_exit_code(tmp_path):
    r = runner.invoke(app, ["pretrain", "--manifest", str(tmp_path / "m.json"), "train.device=gpu",
                            "--workspace", str(tmp_path / "w")])
    assert r.exit_code == 2 and r.output.strip().splitlines()[-1] == (
        "error: config key 'train.device' is 'gpu'; one of auto, cuda, cpu")
    r = runner.invoke(app, ["shards", "verify", "no-such-set", "--workspace", str(tmp_path / "w")])
    assert r.exit_code == 2 and r.output.strip() == "error: no manifest at no-such-set"
    r = runner.invoke(app, ["report", "[/x]", "--workspace", str(tmp_path / "w")])  # brackets are not markup
    assert r.exit_code == 2 and r.output.startswith("error: [/x] holds no metrics.json")


@pytest.mark.parametrize("args, typo, meant", [
    (["curate", "dedup.treshold=0.7"], "dedup.treshold", "dedup.threshold"),
    (["evaluate", "--checkpoint", "c.safetensors", "--task", "kl_grade", "--shards", "m.json", "finetune.epoch=2"],
     "finetune.epoch", "finetune.epochs"),  # a shard set's tasks are checked with its shards, after the settings
    (["pretrain", "--manifest", "m.json", "optim.lrr=1e-4"], "optim.lrr", "optim.lr"),
])
def test_a_settings_typo_is_refused_with_the_key_it_meant_before_anything_runs(tmp_path, args, typo, meant):
    ws = tmp_path / "w"
    for name in ("c.safetensors", "m.json"):  # the files exist (they are checked first, before the settings' imports)
        (tmp_path / name).touch()
    args = [str(tmp_path / a) if a in ("c.safetensors", "m.json") else a for a in args]
    r = runner.invoke(app, [*args, "--workspace", str(ws)])
    last = r.output.strip().splitlines()[-1]
    assert r.exit_code == 2 and last.startswith(f"error: unknown config key '{typo}' (did you mean '{meant}'?)"), last
    assert not list((ws / "catalog").rglob("*.parquet")) and "Traceback" not in r.output


def test_ortho_sql_imports_its_own_module_only(tmp_path):
    """A query's start-up is the whole of it on a small catalog: `ortho sql` builds only its own command, so it
    imports neither Prefect nor the readers, and neither rich nor pyarrow where it draws nothing (issue 16)."""
    code = textwrap.dedent(f"""
        import sys
        from flows.cli import app
        try:
            app(["sql", "SELECT 6 * 7 AS n", "--format", "csv", "--workspace", {str(tmp_path / "w")!r}], prog_name="ortho")
        except SystemExit as e:
            assert not e.code, e.code
        loaded = {{m.split(".")[0] for m in sys.modules}}
        print("heavy:", sorted(loaded & {{"prefect", "torch", "timm", "pydicom", "PIL", "rich", "pyarrow", "numpy"}}))
        print("commands:", sorted(m for m in sys.modules if m.startswith("flows.cli.")))
        """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[:2] == ["n", "42"]
    assert "heavy: []" in r.stdout and "commands: ['flows.cli.common', 'flows.cli.query']" in r.stdout
