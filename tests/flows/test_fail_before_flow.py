"""A mistake that can be found without the orchestrator is found before its server starts: one line, exit 2, and
the Prefect server was never started (each command's one_prefect_server is replaced by one that fails the test)."""

import shutil
from contextlib import contextmanager

import pytest
from typer.testing import CliRunner

from flows.cli import app

runner = CliRunner()


@pytest.fixture
def no_server(monkeypatch):
    started = []

    @contextmanager
    def refuse():
        started.append(True)
        raise AssertionError("the Prefect server started before the mistake was found")
        yield

    for module in ("ingest", "curate", "shards", "pretrain"):
        monkeypatch.setattr(f"flows.cli.{module}.one_prefect_server", refuse)
    monkeypatch.setattr("flows.server.one_prefect_server", refuse)  # evaluate imports it when it runs
    return started


@pytest.fixture
def workspace(phantom_workspace, tmp_path):
    from catalog.workspace import Workspace
    from shards.spec import ShardSetSpec
    from shards.writer import build_shard_set

    ws = Workspace.open(shutil.copytree(phantom_workspace[0].root, tmp_path / "workspace"))
    build_shard_set(ws, ShardSetSpec("knees", "SELECT image_id FROM images WHERE body_part = 'knee'", samples_per_shard=64, max_side=64))
    return ws


def _one_line(ws, args: list[str], expected: str) -> None:
    r = runner.invoke(app, [*args, "--workspace", str(ws.root)])
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], r.output


def test_mistakes_are_found_before_the_server_starts(workspace, no_server, tmp_path):
    from shards.writer import shard_sets_dir

    ws = workspace
    manifest = shard_sets_dir(ws) / "knees" / "manifest.json"
    _one_line(ws, ["ingest", "no-such-source"], "unknown source(s): no-such-source")
    _one_line(ws, ["curate", "dedup.treshold=0.7"], "did you mean 'dedup.threshold'")
    _one_line(ws, ["shards", "build", "knees", "--query", "SELECT image_id FROM images"], "exists with another selection")
    _one_line(ws, ["shards", "build", "Knees", "--query", "SELECT image_id FROM images"], "shard set name 'Knees'")
    _one_line(ws, ["shards", "build", "none", "--query", "SELECT image_id FROM images WHERE false"], "selects no images")
    _one_line(ws, ["shards", "build", "typo", "--query", "SELECT imag_id FROM images"], "imag_id")
    _one_line(ws, ["pretrain", "--manifest", str(tmp_path / "nope.json")], "does not exist")
    _one_line(ws, ["pretrain", "--manifest", str(manifest), "--config", "no-such-config"], "does not exist")
    _one_line(ws, ["pretrain", "--resume", str(tmp_path)], "is not a pretraining run folder")
    _one_line(ws, ["evaluate", "--checkpoint", str(tmp_path / "nope.safetensors"), "--task", "kl_grade"],
              "does not exist")
    checkpoint = tmp_path / "backbone.safetensors"
    checkpoint.touch()
    _one_line(ws, ["evaluate", "--checkpoint", str(checkpoint), "--task", "kl_grde"], "task kl_grde has no labelled")
    _one_line(ws, ["evaluate", "--checkpoint", str(checkpoint), "--task", "kl_grade", "--shards",
                   str(tmp_path / "m.json")], "does not exist")
    assert not no_server


def test_an_up_to_date_shard_set_needs_no_server(workspace, no_server):
    r = runner.invoke(app, ["shards", "build", "knees", "--query",
                            "SELECT image_id FROM images WHERE body_part = 'knee'", "--samples-per-shard", "64",
                            "--max-side", "64", "--workspace", str(workspace.root)])
    assert r.exit_code == 0 and "up to date" in r.output and not no_server
