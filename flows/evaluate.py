"""Prefect flow for evaluation: a task per downstream task is not worth its overhead (they share the
checkpoint and the embedding cache), so one flow runs the evaluation, then renders the report; the
results land in the catalog's `evals` view."""

from __future__ import annotations

from functools import partial

import flows  # noqa: F401  (Prefect defaults)
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from catalog import db
from catalog.workspace import Workspace, WorkspaceBusy
from evaluation.report import write_report
from evaluation.run import EvalConfig, resolve_config, run_evaluation
from flows import progress
from flows.firewall import firewall


def eval_config(settings: dict | None, overrides: list[str] | None = None) -> EvalConfig:
    """An EvalConfig from plain values (what a flow parameter or a pipeline file carries) and `key=value` overrides."""
    return resolve_config(list(overrides or []), settings=dict(settings or {}))


@task(name="report", cache_policy=NO_CACHE, persist_result=False)
@firewall("report")
def report_task(eval_dir: str, workspace: str) -> str:
    return str(write_report(eval_dir, Workspace(workspace)))


@flow(name="evaluate", log_prints=False)
@firewall("evaluate")
def evaluate_flow(workspace: str, checkpoint: str, tasks: list[str], config: EvalConfig | None = None,
                  eval_id: str | None = None, model_name: str | None = None, report: bool = True,
                  shards: str | None = None) -> dict:
    """`config`: the evaluation's settings, resolved (`eval_config`; None: EvalConfig's defaults); Prefect records
    them as plain values."""
    ws = Workspace.open(workspace)
    out = run_evaluation(ws, checkpoint, tasks, config or EvalConfig(), eval_id=eval_id, model_name=model_name,
                         on_progress=partial(progress.report, "evaluate"), shards=shards)
    try:  # catalog.duckdb (for the duckdb CLI) picks up the new view rows; `ortho sql` sees them anyway
        with ws.write_lock(10.0):
            db.write_duckdb_file(ws)
    except WorkspaceBusy:
        pass
    html = report_task(str(out), str(ws.root)) if report else None
    return {"eval_id": out.name, "eval_dir": str(out), "report": html}
