"""`ortho pipeline`: one file, every stage as a subflow, skipped when up to date, failures contained."""

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from flows.cli import app
from flows.demo import KL_PATTERN
from flows.pipeline import Pipeline, PipelineError
from tests.training.tiny import TINY

runner = CliRunner()


def stage_rows(output: str) -> dict[str, str]:
    """stage -> status from the summary table (rows wrapped onto more lines have no stage cell)."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if "stage" in line and "status" in line)
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("└"))  # the stage table only
    rows = [line.split("│") for line in lines[start:end] if line.count("│") >= 3]
    return {r[1].strip(): r[2].strip() for r in rows if r[1].strip() and r[1].strip() != "stage"}


def write(tmp_path: Path, spec: dict) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_bad_pipeline_files_are_one_line_errors(tmp_path):
    with pytest.raises(PipelineError, match="does not exist"):
        Pipeline.load(tmp_path / "nope.yaml")
    with pytest.raises(PipelineError, match="unknown config key 'shard' \\(did you mean 'shards'\\?\\)"):
        Pipeline.load(write(tmp_path, {"shard": []}))
    with pytest.raises(PipelineError, match="pretrain.shards 'x' is not a shard set"):
        Pipeline.load(write(tmp_path, {"shards": [{"name": "a", "query": "q"}], "pretrain": {"shards": "x"}}))
    with pytest.raises(PipelineError, match="pretrain: unknown config key 'optim.lrr' \\(did you mean 'optim.lr'"):
        Pipeline.load(write(tmp_path, {"shards": [{"name": "a", "query": "q"}],
                                       "pretrain": {"shards": "a", "config": "cpu-tiny",
                                                    "overrides": ["optim.lrr=1"]}}))
    with pytest.raises(PipelineError, match="pretrain: config file nope does not exist"):
        Pipeline.load(write(tmp_path, {"shards": [{"name": "a", "query": "q"}],
                                       "pretrain": {"shards": "a", "config": "nope"}}))
    with pytest.raises(PipelineError, match="evaluate: unknown config key 'protocol'"):
        Pipeline.load(write(tmp_path, {"shards": [{"name": "a", "query": "q"}], "pretrain": {"shards": "a"},
                                       "evaluate": {"protocol": ["knn"]}}))
    r = runner.invoke(app, ["pipeline", str(write(tmp_path, {"sources": [{"name": "x"}]})),
                            "--workspace", str(tmp_path / "w")])
    assert r.exit_code == 2 and "sources[0] needs a name and a location" in r.output


def test_the_pretrain_section_fills_a_pretrain_config_over_its_file(tmp_path):
    shards = [{"name": "a", "query": "q"}]
    spec = Pipeline.load(write(tmp_path, {"shards": shards, "pretrain": {
        "shards": "a", "config": "cpu-tiny", "train": {"steps": 7, "seed": 3}, "optim": {"lr": 1e-3},
        "overrides": ["train.seed=4"]}}))
    cfg = spec.pretrain_config
    assert (cfg.model.name, cfg.crops.global_size) == ("vit_tiny_patch8_dinov3", 64)  # the file's
    assert (cfg.train.steps, cfg.optim.lr, cfg.train.seed) == (7, 1e-3, 4)  # the section's, the overrides last
    assert spec.pretrain_settings() == {"train": {"steps": 7, "seed": 3}, "optim": {"lr": 1e-3}}
    with pytest.raises(PipelineError, match="pretrain: unknown config key 'trian' \\(did you mean 'train'"):
        Pipeline.load(write(tmp_path, {"shards": shards, "pretrain": {"shards": "a", "trian": {"steps": 7}}}))
    with pytest.raises(PipelineError, match="pretrain: config key 'train.steps' takes a number"):
        Pipeline.load(write(tmp_path, {"shards": shards, "pretrain": {"shards": "a", "train": {"steps": "many"}}}))


@pytest.mark.prefect
@pytest.mark.slow
def test_a_pipeline_runs_every_stage_then_skips_them_and_contains_a_failure(tmp_path, prefect_harness):
    from tests.evaluation.bars import write_bars

    bars = write_bars(tmp_path / "bars")
    spec = {
        "sources": [{"name": "bars", "location": str(bars), "kind": "public", "labels": ["folder:kl_grade"],
                     "path_pattern": KL_PATTERN, "modality": "DX", "body_part": "knee"}],
        "ingest": {"runner": "threads", "workers": 2},
        "curate": {"runner": "threads", "workers": 2},
        "shards": [{"name": "train", "query": "SELECT image_id FROM images WHERE split = 'train'",
                    "samples_per_shard": 16}],
        "pretrain": {"name": "p", "shards": "train", "overrides": TINY + ["train.steps=3"]},
        "evaluate": {"name": "e", "tasks": ["kl_grade"], "protocols": ["knn"], "seeds": 1, "baselines": [],
                     "knn_ks": [3], "n_boot": 20},
    }
    w = ["--workspace", str(tmp_path / "ws")]
    r = runner.invoke(app, ["pipeline", str(write(tmp_path, spec)), *w])
    assert r.exit_code == 0, r.output
    status = {k: v for k, v in stage_rows(r.output).items()}
    assert status == {"ingest": "done", "curate": "done", "shards:train": "done", "pretrain": "done",
                      "evaluate": "done"}
    evals = list((tmp_path / "ws" / "evals").glob("e-*/report.html"))
    assert len(evals) == 1 and "report:" in r.output
    # the same file again: nothing to do anywhere
    r = runner.invoke(app, ["pipeline", str(write(tmp_path, spec)), *w])
    assert r.exit_code == 0, r.output
    assert r.output.count("up to date") == 5
    # a broken selection fails its stage; pretraining and evaluation are blocked; the rest stands
    spec["shards"][0]["query"] = "SELECT image_id FROM no_such_table"
    r = runner.invoke(app, ["pipeline", str(write(tmp_path, spec)), *w])
    assert r.exit_code == 1
    lines = stage_rows(r.output)
    assert "failed" in lines["shards:train"] and "blocked" in lines["pretrain"] and "blocked" in lines["evaluate"]
    assert "up to date" in lines["ingest"] and "up to date" in lines["curate"]
    assert len(list((tmp_path / "ws" / "evals").glob("e-*/report.html"))) == 1  # earlier results in place
    rows = runner.invoke(app, ["sql", "SELECT count(*) AS n FROM evals", "--format", "json", *w]).output
    assert json.loads(rows)[0]["n"] == 2  # knn + majority, from the first run only


def test_serve_checks_its_schedule_and_shows_the_next_runs(tmp_path):
    spec = write(tmp_path, {"curate": {}})
    w = ["--workspace", str(tmp_path / "w")]
    r = runner.invoke(app, ["serve", str(spec), "--cron", "30 1 * * *", "--dry-run", *w])
    assert r.exit_code == 0, r.output
    assert "ingest, curate" in r.output and "T01:30" in r.output
    r = runner.invoke(app, ["serve", str(spec), "--cron", "61 * * * *", *w])
    assert r.exit_code == 2 and "Invalid cron string" in r.output
    r = runner.invoke(app, ["serve", str(spec), "--stages", "ingest,train", "--dry-run", *w])
    assert r.exit_code == 2 and "unknown stage 'train'" in r.output


def test_error_text_keeps_no_path_under_a_source(tmp_path):
    from catalog.workspace import Workspace
    from flows.pipeline import scrub_paths
    from ingest.sources import Source, add_source

    src = tmp_path / "QUIMBLETON_ERMINTRUDE_19500101"
    (src / "study").mkdir(parents=True)
    ws = Workspace.open(tmp_path / "w")
    add_source(ws, Source("pacs", str(src), "internal"))
    text = f"OSError: [Errno 5] Input/output error: '{src}/study/IM0001.dcm'\n  File \"{src}/x\", line 1"
    out = scrub_paths(text, ws)
    assert "QUIMBLETON" not in out and out.count("<a path under source pacs>") == 2


@pytest.mark.prefect
@pytest.mark.slow
def test_every_stage_reports_its_seconds_and_the_flow_logs_them(tmp_path, prefect_harness):
    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker

    from flows.cli import common
    from flows.cli.pipeline import print_pipeline_results
    from flows.pipeline import pipeline_flow
    from tests.evaluation.bars import write_bars

    bars = write_bars(tmp_path / "QUIMBLETON_bars")  # a path that must not reach the flow's log
    spec = write(tmp_path, {
        "sources": [{"name": "bars", "location": str(bars), "kind": "public", "labels": ["folder:kl_grade"],
                     "path_pattern": KL_PATTERN, "modality": "DX", "body_part": "knee"}],
        "ingest": {"runner": "threads", "workers": 2}, "curate": {"runner": "threads", "workers": 2, "crops": False},
        "shards": [{"name": "train", "query": "SELECT image_id FROM no_such_table"}],
        "pretrain": {"name": "p", "shards": "train", "overrides": TINY}})
    state = pipeline_flow(str(tmp_path / "ws"), str(spec), show_progress=False, return_state=True)
    results = state.result()
    APILogWorker.drain_all(timeout=10)  # what a served run shows: its logs as the Prefect server holds them
    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    messages = [entry.message for entry in sorted(logs, key=lambda entry: entry.timestamp)]
    assert [(r["stage"], r["status"]) for r in results] == [("ingest", "done"), ("curate", "done"),
                                                            ("shards:train", "failed"), ("pretrain", "blocked")]
    seconds = [r["seconds"] for r in results]
    assert all(isinstance(s, float) and s >= 0 for s in seconds) and seconds[0] > 0 and seconds[-1] == 0
    lines = [m for m in messages if m.startswith(("stage ", "pipeline: "))]
    assert lines[:4] == [f"stage {r['stage']}: {r['status']} in {r['seconds']:.1f} s" for r in results]
    total = float(lines[4].split(" in ")[1].split(" s ")[0])
    assert len(lines) == 5 and lines[4].startswith("pipeline: 4 stages in ") and total >= round(sum(seconds), 1) - 0.1
    assert "2 done, 1 failed, 1 blocked" in lines[4]
    assert not any("QUIMBLETON" in m for m in messages)
    with common.console.capture() as shown:
        print_pipeline_results(spec, tmp_path, results)
    table = shown.get()
    assert "time" in table and f"{seconds[0]:.1f} s" in table and "in the stages" in table
    assert stage_rows(table) == {"ingest": "done", "curate": "done", "shards:train": "failed", "pretrain": "blocked"}
