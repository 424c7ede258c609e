"""`ortho ingest`."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.progress import TextColumn
from rich.table import Table

from catalog.status import run_file_counts
from catalog.workspace import Workspace
from flows.cli.common import (WorkspaceOpt, cell, console, err, fail, open_workspace, progress_bars, setting,
                               setup_logging, wait_option)
from flows.runners import RunnerConfig
from flows.server import one_prefect_server
from ingest.config import IngestConfig


def ingest(
    names: Annotated[Optional[list[str]], typer.Argument(help="Sources to ingest [default: all]")] = None,
    batch_size: int = setting(IngestConfig, "batch_size", help="Files per Prefect task"),
    runner: str = setting(RunnerConfig, "runner", help="Task runner: threads, processes, dask or ray"),
    workers: Optional[int] = setting(RunnerConfig, "workers", help="Parallel workers [default: CPU count]"),
    address: Optional[str] = setting(RunnerConfig, "address", help="A running cluster to use: tcp://HOST:PORT "
                                     "(--runner dask) or HOST:PORT (--runner ray) [default: start a local one]"),
    retry_quarantined: bool = setting(IngestConfig, "retry_quarantined", help="Read quarantined files again"),
    wait: float = wait_option(),
    burned_in: Optional[str] = setting(IngestConfig, "burned_in", help="This run's burned-in text policy (mask, "
                                       "quarantine, off) [default: each source's]"),
    workspace: WorkspaceOpt = None,
) -> None:
    """Ingest registered sources: de-identify, store pixels, catalog every file."""
    ws = open_workspace(workspace)
    config = IngestConfig(batch_size=batch_size, retry_quarantined=retry_quarantined, burned_in=burned_in or None)
    run_ingest(ws, names or None, config, RunnerConfig(runner, workers, address), wait=wait)


def run_ingest(ws: Workspace, names: list[str] | None, config: IngestConfig = IngestConfig(),
               runner: RunnerConfig = RunnerConfig(), wait: float = 0.0) -> list[dict]:
    from flows import ingest as ingest_flows
    from ingest.sources import load_sources

    known = load_sources(ws)
    if not known:
        fail("no sources registered; add one with `ortho sources add NAME LOCATION`")
    missing = [n for n in names or [] if n not in known]
    if missing:
        fail(f"unknown source(s): {', '.join(missing)}; see `ortho sources list`")
    log_path = setup_logging(ws, "ingest")
    counts = TextColumn("files · {task.fields[images]} images · {task.fields[quarantined]} quarantined")
    with one_prefect_server(), progress_bars(middle=(counts,), transient=False) as bars:
        bars.hook("ingest", lambda result, s: bars.update(
            s.source, s.result.files, s.files_seen - s.files_skipped, images=s.result.images,
            quarantined=sum(s.result.quarantined.values())))
        results = ingest_flows.ingest_flow(str(ws.root), names, config, runner, wait_s=wait)
    print_ingest_summary(ws, results)
    err.print(f"log: {log_path}")
    return results


def print_ingest_summary(ws: Workspace, results: list[dict]) -> None:
    table = Table("source", "seen", "new", "already done", "ingested", "duplicate", "quarantined", "images",
                  "text cleaned", title="ingest summary (this run)")
    by_run, reasons = run_file_counts(ws, [r["run_id"] for r in results])
    for r in results:
        counts = by_run.get(r["run_id"], {})
        table.add_row(*map(cell, (r["source"], r["files_seen"], r["files_processed"], r["files_skipped"],
                                  counts.get("ingested", 0), counts.get("duplicate", 0),
                                  counts.get("quarantined", 0), r["images"], r.get("text_cleaned", 0))))
    console.print(table)
    pulls = [(r["source"], r["pull"]) for r in results if r.get("pull")]
    if pulls:
        pt = Table("source", "studies listed", "up to date", "new", "complete", "failed (retried next run)", "stopped",
                   title="PACS pulls (this run)")
        for source, p in pulls:
            pt.add_row(cell(source), *(str(p[k]) for k in ("listed_studies", "up_to_date", "new_studies", "complete",
                                                     "failed")), p["stopped"] or "")
        console.print(pt)
    for r in results:
        if r.get("skipped"):
            console.print(cell(f"source {r['source']}: not pulled, {r['skipped']}"))
    if reasons:
        qt = Table("source", "reason", "files", title="quarantined this run, by reason")
        for source, reason, n in reasons:
            qt.add_row(*map(cell, (source, reason, n)))
        console.print(qt)
