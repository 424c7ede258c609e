"""The whole pipeline: `ortho pipeline`, `ortho serve` and `ortho demo`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Column, Table

import configs
from flows.cli.common import WorkspaceOpt, console, err, fail, open_workspace, progress_bars, setup_logging, split_csv
from flows.cli.curate import print_curate_summary
from flows.cli.evaluate import print_eval_summary
from flows.server import one_prefect_server

DEMO_PIPELINE = configs.path("pipelines/demo.yaml")  # package data: found from an installed wheel too
STATUS_COLOURS = {"done": "green", "up to date": "cyan", "failed": "red", "blocked": "yellow"}


def pipeline(
    pipeline_file: Path = typer.Argument(..., help="Pipeline YAML (e.g. configs/pipelines/demo.yaml)"),
    workspace: WorkspaceOpt = None,
) -> None:
    """Run every stage of a pipeline file as one Prefect flow, skipping what is up to date."""
    from flows.pipeline import Pipeline, pipeline_flow

    spec = Pipeline.load(pipeline_file)
    ws = open_workspace(workspace or (Path(spec.workspace) if spec.workspace else None))
    log_path = setup_logging(ws, "pipeline")
    with one_prefect_server(), progress_bars() as bars:
        bars.hook("ingest", lambda result, s: bars.update(f"ingest {s.source}", s.result.files,
                                                          s.files_seen - s.files_skipped))
        bars.hook("curate", lambda stage, done, total: bars.update("curate", done, total))
        bars.hook("evaluate", lambda done, total, label: bars.update("evaluate", done, total))
        results = pipeline_flow(str(ws.root), str(pipeline_file))
    print_pipeline_results(pipeline_file, ws.root, results)
    if any(r["status"] in ("failed", "blocked") for r in results):
        err.print(f"[red]some stages failed[/red]: details in {ws.log_path('pipeline-errors')} and {log_path}")
        raise typer.Exit(1)


def print_pipeline_results(pipeline_file: Path, root: Path, results: list[dict]) -> None:
    t = Table("stage", "status", Column("time", justify="right"), "detail",
              title=f"pipeline {pipeline_file.name} on {root}",
              caption=f"{format_seconds(sum(r['seconds'] for r in results))} in the stages")
    for r in results:
        c = STATUS_COLOURS.get(r["status"], "white")
        t.add_row(r["stage"], f"[{c}]{r['status']}[/{c}]", format_seconds(r["seconds"]), r["detail"])
    console.print(t)
    curated = next((r.get("summary") for r in results if r["stage"] == "curate" and r.get("summary")), None)
    if curated:
        print_curate_summary(curated)
    curation_report = next((r.get("report") for r in results if r["stage"] == "curate" and r.get("report")), None)
    if curation_report:
        console.print(f"curation report: {curation_report}", soft_wrap=True, markup=False)
    report_path = next((r.get("report") for r in results if r["stage"] == "evaluate" and r["status"] != "failed"), None)
    if report_path and Path(report_path).is_file():
        print_eval_summary(Path(report_path).parent)
        console.print(f"report: {report_path}")


def format_seconds(seconds: float) -> str:
    """12.3 s, 4 min 05 s, 1 h 02 min."""
    if round(seconds, 1) < 60:
        return f"{seconds:.1f} s"
    m, sec = divmod(round(seconds), 60)
    return f"{m} min {sec:02d} s" if m < 60 else f"{m // 60} h {m % 60:02d} min"


def serve(
    pipeline_file: Path = typer.Argument(..., help="Pipeline YAML; read again at every scheduled run"),
    cron: str = typer.Option("0 2 * * *", help="When to run (cron, in --timezone)"),
    timezone: str = typer.Option("UTC", help="Time zone of the cron schedule"),
    stages: str = typer.Option("ingest,curate", help="Stages to run on schedule (comma-separated), or 'all'"),
    name: Optional[str] = typer.Option(None, help="Deployment name [default: the file's name]"),
    dry_run: bool = typer.Option(False, help="Show the deployment and its next runs, then exit"),
    workspace: WorkspaceOpt = None,
) -> None:
    """Serve the pipeline as a scheduled Prefect deployment (incremental ingest + curate by default).
    Runs without a Prefect server (a temporary one is started); with `prefect server start` the runs
    show in its UI."""
    from prefect.schedules import Cron

    from flows.pipeline import STAGES, Pipeline, pipeline_flow

    spec = Pipeline.load(pipeline_file)
    chosen = list(STAGES) if stages == "all" else split_csv([stages])
    bad = [s for s in chosen if s not in STAGES]
    if bad:
        fail(f"unknown stage {bad[0]!r}: choose from {', '.join(STAGES)}")
    check_schedule(cron, timezone)
    ws = open_workspace(workspace or (Path(spec.workspace) if spec.workspace else None))
    deployment_name = name or pipeline_file.stem
    if dry_run:
        print_deployment(deployment_name, chosen, cron, timezone, ws.root)
        return
    setup_logging(ws, "serve")
    params = {"workspace": str(ws.root), "pipeline_file": str(pipeline_file.absolute()), "show_progress": False,
              "stages": chosen}
    with one_prefect_server():  # every nightly run, and its worker processes, report to this one
        pipeline_flow.serve(name=deployment_name, schedule=Cron(cron, timezone=timezone), parameters=params)


def check_schedule(cron: str, timezone: str) -> None:
    """The expression checked now, not at the first run."""
    from prefect.client.schemas.schedules import CronSchedule

    try:
        CronSchedule(cron=cron, timezone=timezone)
    except Exception as e:
        why = e.errors()[0]["msg"] if hasattr(e, "errors") else str(e).splitlines()[0]
        fail(f"bad schedule {cron!r} ({timezone}): {why[:120]}")


def print_deployment(name: str, stages: list[str], cron: str, timezone: str, root: Path) -> None:
    import datetime as dt
    from zoneinfo import ZoneInfo

    t = Table("", "", title=f"deployment pipeline/{name}")
    t.add_row("stages", ", ".join(stages))
    t.add_row("schedule", f"{cron} ({timezone})")
    try:
        from prefect._vendor.croniter import croniter  # what Prefect's scheduler itself uses

        it = croniter(cron, dt.datetime.now(ZoneInfo(timezone)))
        t.add_row("next runs", ", ".join(it.get_next(dt.datetime).isoformat(timespec="minutes") for _ in range(3)))
    except ImportError:
        pass
    t.add_row("workspace", str(root))
    console.print(t)


def demo(
    pipeline_file: Path = typer.Option(DEMO_PIPELINE, "--pipeline", help="The bundled demo pipeline file"),
    workspace: WorkspaceOpt = None,
) -> None:
    """The main job end to end on the embedded default data: `ortho pipeline` on the bundled demo file
    (the phantom source, pydicom's real files, ingest, curate, shards, pretraining, evaluation)."""
    ws = open_workspace(workspace)
    pipeline(pipeline_file=pipeline_file, workspace=ws.root)
    console.print("\nTry: [bold]ortho status[/bold]"
                  "\n     [bold]ortho sql \"SELECT modality, body_part, count(*) FROM images GROUP BY ALL\"[/bold]"
                  f"\n     [bold]ortho shards verify {ws.root}/shards/demo-knee/manifest.json[/bold]"
                  "\n     [bold]ortho sql \"SELECT run_id, kind, status, params FROM runs WHERE kind = 'pretrain'\"[/bold]"
                  "\n     [bold]ortho sql \"SELECT task, transfer, model, protocol, fraction, qwk, auroc FROM evals\"[/bold]")
