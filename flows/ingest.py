"""Prefect flows for ingest: one flow per source, fanning out a task per batch of files.

Tasks receive the workspace path and a batch-file path (under private/staging), never file
paths or arrays: nothing identifying reaches Prefect's database or its logs.
"""

from __future__ import annotations

import logging
from collections import deque
from pathlib import Path
from typing import Iterable, Iterator

import flows  # noqa: F401  (Prefect defaults)
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from catalog.workspace import Workspace
from flows import progress
from flows.firewall import ScrubbedError, firewall
from flows.runners import build_task_runner
from ingest.batch import BatchResult, BatchSpec, process_batch
from ingest.run import IngestSummary, ingest_source
from ingest.sources import load_sources

log = logging.getLogger("ortho.ingest")

def _on_batch(result, summary) -> None:
    progress.report("ingest", result, summary)


def _retry_on_io(task, task_run, state) -> bool:
    try:
        state.result()
    except OSError:
        return True
    except ScrubbedError as e:  # what the task's firewall made of an OSError
        return e.io_error
    except BaseException:
        return False
    return False


@task(name="ingest-batch", retries=2, retry_delay_seconds=1, retry_condition_fn=_retry_on_io,
      cache_policy=NO_CACHE, persist_result=False)
@firewall("ingest-batch")
def ingest_batch(workspace: str, batch_path: str) -> dict:
    ws = Workspace.open(workspace)
    attach_log_file(ws)
    result = process_batch(ws, BatchSpec.load(Path(batch_path)))
    return {"files": result.files, "images": result.images, "bytes": result.bytes,
            "quarantined": dict(result.quarantined), "formats": dict(result.formats), "cleaned": result.cleaned}


def attach_log_file(ws: Workspace) -> None:
    """Worker processes append their one-line quarantine messages to workspace/logs/ingest.log."""
    path = str(ws.logs_dir / "ingest.log")
    logger = logging.getLogger("ortho")
    if any(isinstance(h, logging.FileHandler) and h.baseFilename == path for h in logger.handlers):
        return
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def _as_result(d: dict) -> BatchResult:
    r = BatchResult(files=d["files"], images=d["images"], bytes=d["bytes"], cleaned=d["cleaned"])
    r.quarantined.update(d["quarantined"])
    r.formats.update(d["formats"])
    return r


def prefect_map(max_in_flight: int):
    """Submit a task per batch, keeping at most `max_in_flight` pending: the listing streams."""

    def run(ws: Workspace, batch_paths: Iterable[Path]) -> Iterator[BatchResult]:
        pending: deque = deque()
        for path in batch_paths:
            pending.append(ingest_batch.submit(str(ws.root), str(path)))
            while len(pending) >= max_in_flight:
                yield _as_result(pending.popleft().result())
        while pending:
            yield _as_result(pending.popleft().result())

    return run


@flow(name="ingest-source", log_prints=False)
@firewall("ingest-source")
def ingest_source_flow(workspace: str, source: str, batch_size: int = 64, max_in_flight: int = 8,
                       retry_quarantined: bool = False, wait_s: float = 0.0, burned_in: str | None = None) -> dict:
    ws = Workspace.open(workspace)
    summary: IngestSummary = ingest_source(ws, source, batch_size=batch_size, map_batches=prefect_map(max_in_flight),
                                           retry_quarantined=retry_quarantined, on_batch=_on_batch, wait_s=wait_s,
                                           burned_in=burned_in)
    return summary.as_dict()


@flow(name="ingest", log_prints=False)
@firewall("ingest")
def ingest_flow(workspace: str, sources: list[str] | None = None, batch_size: int = 64, runner: str = "processes",
                workers: int | None = None, retry_quarantined: bool = False, wait_s: float = 0.0,
                burned_in: str | None = None) -> list[dict]:
    """Every named source (default: all registered, in registration order), one subflow each."""
    ws = Workspace.open(workspace)
    names = sources or [s.name for s in sorted(load_sources(ws).values(), key=lambda s: s.seq)]
    sub = ingest_source_flow.with_options(task_runner=build_task_runner(runner, workers))
    results = []
    with ws.write_lock(wait_s):
        for name in names:
            results.append(sub(workspace, name, batch_size=batch_size, max_in_flight=2 * (workers or 2) + 1,
                               retry_quarantined=retry_quarantined, burned_in=burned_in))
    return results
