"""`ortho pretrain` through the real Prefect flow: one-line errors, and the run lands in `runs`."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from tests.training.tiny import TINY

runner = CliRunner()


def test_a_config_typo_is_one_line_and_exit_2(tmp_path, phantom_manifest):
    _, manifest = phantom_manifest
    r = runner.invoke(app, ["pretrain", "--manifest", str(manifest), "optim.lrr=1", "--workspace", str(tmp_path / "w")])
    assert r.exit_code == 2
    assert "unknown config key 'optim.lrr' (did you mean 'optim.lr'?)" in r.output
    r = runner.invoke(app, ["pretrain", "--manifest", str(tmp_path / "nope.json"), "--workspace", str(tmp_path / "w")])
    assert r.exit_code == 2 and "does not exist" in r.output


@pytest.mark.prefect
@pytest.mark.slow
def test_pretrain_paused_then_resumed_is_recorded_in_runs(tmp_path, phantom_manifest, prefect_harness):
    ws, manifest = phantom_manifest
    run_dir = tmp_path / "run"
    args = ["pretrain", "--manifest", str(manifest), "--run-dir", str(run_dir), "--workspace", str(ws.root),
            *TINY, "train.steps=4", "--until", "2"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "continue with ortho pretrain --resume" in r.output
    r = runner.invoke(app, ["pretrain", "--resume", str(run_dir), "--workspace", str(ws.root)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["sql", "SELECT kind, source, status, images, params FROM runs WHERE kind = 'pretrain'",
                            "--format", "json", "--workspace", str(ws.root)])
    rows = json.loads(r.output)
    assert len(rows) == 1 and rows[0]["status"] == "completed" and rows[0]["source"] == "all"
    params = json.loads(rows[0]["params"])
    assert params["steps"] == 4 and params["backbone"].endswith("backbone.safetensors")


def test_python_m_trainings_new_run_lands_in_the_manifests_workspace_else_in_runs(tmp_path, monkeypatch):
    from catalog.workspace import Workspace
    from training.__main__ import _new_run_dir

    ws = Workspace.open(tmp_path / "w")
    (ws.shard_sets_dir / "knees").mkdir(parents=True)
    run = _new_run_dir(str(ws.shard_sets_dir / "knees" / "manifest.json"))
    assert run.parent == ws.train_runs_dir  # where `ortho embed --checkpoint <run_id>` looks
    copied = tmp_path / "copies" / "shards" / "knees"
    copied.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert _new_run_dir(str(copied / "manifest.json")).parent == Path("runs")
    assert _new_run_dir("s3://bucket/sets/knees/manifest.json").parent == Path("runs")
