"""Prefect flow for pretraining: launches the job (here, under torchrun, or through a cluster
launcher) and records the run in the catalog's `runs` view."""

from __future__ import annotations

import datetime as dt
import json
import shlex
import subprocess
import sys
from pathlib import Path

import flows  # noqa: F401  (Prefect defaults)
from prefect import flow

from catalog import schema
from catalog.errors import outcome_of
from catalog.parts import write_table
from catalog.workspace import Workspace
from flows.firewall import firewall
from training.config import dump_config, load_config
from training.data import TrainingError
from catalog.ids import new_pretrain_id
from training.trainer import prepare_run, read_run, train


def record_pretrain_run(ws: Workspace, run: dict, phase: str, status: str, params: dict) -> None:
    row = dict(run_id=run["run_id"], kind="pretrain", source=run["shard_set"], phase=phase, status=status,
               generation=None, recorded_at=dt.datetime.now(dt.timezone.utc), files_seen=None, files_processed=None,
               files_skipped=None, images=run["samples"], quarantined=None, params=json.dumps(params))
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    write_table(ws.runs_dir / f"{run['run_id']}-{phase}-{stamp}.parquet", [row], schema.RUN, ws.staging_dir)


def torchrun_command(run_dir: Path, nproc: int, extra: list[str] | None = None) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", "-m", "training",
            "--resume", str(run_dir), *(extra or [])]


def _run_checked(command, what: str, shell: bool = False) -> None:
    # A TrainingError, not CalledProcessError: the firewall would reduce that to its type, losing the status.
    status = subprocess.run(command, shell=shell).returncode
    if status:
        raise TrainingError(f"{what} exited with status {status}")


@flow(name="pretrain", log_prints=False)
@firewall("pretrain")
def pretrain_flow(workspace: str, manifest: str | None = None, config: str | None = None,
                  overrides: list[str] | None = None, resume: str | None = None, run_dir: str | None = None,
                  nproc: int = 1, launcher: str = "local", until: int | None = None,
                  show_progress: bool = True, settings: dict | None = None) -> dict:
    """A new run's config is `config` (a file) <- `settings` (PretrainConfig sections: a pipeline file's) <-
    `overrides`. launcher: `local` trains in this process (or under torchrun when nproc > 1); any other value is a
    command template with `{command}` (e.g. "sbatch --gpus 8 --wrap '{command}'") that is run and not waited on."""
    ws = Workspace.open(workspace)
    fresh = not resume
    if resume:
        path = Path(resume)
        cfg, _ = read_run(path, overrides or [])  # a one-line error when it is not a run folder
        if overrides:
            dump_config(cfg, path / "config.yaml")
    else:
        if not manifest:
            raise TrainingError("a new run needs --manifest")
        path = Path(run_dir) if run_dir else ws.train_runs_dir / new_pretrain_id()
        prepare_run(load_config(config, overrides or [], settings), manifest, path, within=ws.root)
    _, run = read_run(path)
    params = {"run_dir": str(path), "manifest": run["manifest"], "manifest_sha256": run["manifest_sha256"],
              "nproc": nproc, "launcher": launcher.split()[0] if launcher else "local", "resume": bool(resume)}
    extra = [] if until is None else ["--until", str(until)]
    if launcher != "local":
        command = shlex.join(torchrun_command(path, nproc, extra))
        _run_checked(launcher.replace("{command}", command), "the launcher", shell=True)
        record_pretrain_run(ws, run, "started", "submitted", params)
        return {"run_id": run["run_id"], "run_dir": str(path), "submitted": command}
    record_pretrain_run(ws, run, "started", "running", params)
    try:
        if nproc > 1:
            _run_checked(torchrun_command(path, nproc, extra), "the training processes")
            summary = {"run_id": run["run_id"], "run_dir": str(path)}
        else:
            summary = train(path, show_progress=show_progress, until=until, verify_shards=False if fresh else None)
    except BaseException as e:
        record_pretrain_run(ws, run, "finished", outcome_of(e), {**params, "error": type(e).__name__})
        raise
    from training.metrics import read_metrics

    rows = read_metrics(path)
    last = rows[-1] if rows else {}
    done = bool(last) and last.get("step") == load_config(path / "config.yaml").train.steps
    record_pretrain_run(ws, run, "finished", "completed" if done else "paused",
                        {**params, "steps": last.get("step"), "loss": last.get("loss"),
                         "backbone": str(path / "backbone.safetensors") if done else None})
    collapse = [msg for row in rows for msg in row.get("collapse", [])]
    return {**summary, "steps": last.get("step"), "loss": last.get("loss"), "completed": done, "collapse": collapse}
