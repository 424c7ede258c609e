"""Prefect flows for ingest: one flow per source, fanning out a task per batch of files.

Tasks receive the workspace path and a batch-file path (under private/staging), never file
paths or arrays: nothing identifying reaches Prefect's database or its logs.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Iterable, Iterator

import flows  # noqa: F401  (Prefect defaults)
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from catalog.workspace import Workspace
from flows import progress, settings
from flows.firewall import ScrubbedError, firewall
from flows.runners import RunnerConfig, prefect_map
from flows.worker_lines import held_for_the_command, not_relayed, print_relayed
from ingest.batch import BatchResult, BatchSpec, process_batch
from ingest.config import IngestConfig
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
def ingest_batch(workspace: str, batch_path: str, runtime: dict | None = None) -> dict:
    """`runtime`: the flow's settings (flows/settings.py); the read limits travel in the batch file."""
    settings.apply_task_settings(runtime)
    ws = Workspace.open(workspace)
    attach_log_file(ws)
    with held_for_the_command() as lines:  # a worker's quarantine lines, printed by the command above its bars
        result = process_batch(ws, BatchSpec.load(Path(batch_path)))
    return {"files": result.files, "images": result.images, "bytes": result.bytes, "lines": lines,
            "quarantined": dict(result.quarantined), "formats": dict(result.formats), "cleaned": result.cleaned}


def attach_log_file(ws: Workspace) -> None:
    """Worker processes append their one-line quarantine messages to workspace/logs/ingest.log."""
    path = str(ws.log_path("ingest"))
    logger = logging.getLogger("ortho")
    if any(isinstance(h, logging.FileHandler) and h.baseFilename == path for h in logger.handlers):
        return
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    handler.addFilter(not_relayed)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def _as_result(d: dict) -> BatchResult:
    print_relayed(d.get("lines", ()), log)
    r = BatchResult(files=d["files"], images=d["images"], bytes=d["bytes"], cleaned=d["cleaned"])
    r.quarantined.update(d["quarantined"])
    r.formats.update(d["formats"])
    return r


def map_batches(max_in_flight: int):
    """A task per batch file, at most `max_in_flight` pending: the listing streams."""

    def run(ws: Workspace, batch_paths: Iterable[Path]) -> Iterator[BatchResult]:
        submit = partial(_submit_batch, str(ws.root))
        return map(_as_result, prefect_map(submit, batch_paths, max_in_flight))

    return run


def _submit_batch(workspace: str, path: Path):
    return ingest_batch.submit(workspace, str(path), settings.current().as_dict())


def materialise_phantom(ws: Workspace, name: str) -> None:
    """A phantom source is drawn on first use; its location is the tree or its pacs/ or public/ part."""
    source = load_sources(ws).get(name)
    if source is not None and source.kind == "phantom":
        from flows.phantom import write_phantom

        location = Path(source.location)
        write_phantom(location.parent if location.name in ("pacs", "public") else location)


@flow(name="ingest-source", log_prints=False)
@firewall("ingest-source")
def ingest_source_flow(workspace: str, source: str, config: IngestConfig = IngestConfig(),
                       max_in_flight: int = RunnerConfig().max_in_flight, wait_s: float = 0.0) -> dict:
    ws = Workspace.open(workspace)
    src = load_sources(ws).get(source)
    if src is not None:  # a clinical archive gets at most --max-connections retrievals at once
        max_in_flight = src.location_kind.max_in_flight(max_in_flight)
    with ws.write_lock(wait_s):
        materialise_phantom(ws, source)
        summary: IngestSummary = ingest_source(ws, source, batch_size=config.batch_size,
                                               map_batches=map_batches(max_in_flight),
                                               retry_quarantined=config.retry_quarantined, on_batch=_on_batch,
                                               burned_in=config.burned_in, **settings.current().ingest_options())
    return summary.as_dict()


@flow(name="ingest", log_prints=False)
@firewall("ingest")
def ingest_flow(workspace: str, sources: list[str] | None = None, config: IngestConfig = IngestConfig(),
                runner: RunnerConfig = RunnerConfig(), wait_s: float = 0.0) -> list[dict]:
    """Every named source (default: all registered, in registration order), one subflow each, with the stage's
    settings (`config`) and where its batches run (`runner`; its `address`: a running Dask scheduler or Ray cluster,
    docs/scaling.md). Both are frozen dataclasses of plain values: Prefect records them as the run's parameters,
    which hold nothing identifying."""
    ws = Workspace.open(workspace)
    names = sources or [s.name for s in sorted(load_sources(ws).values(), key=lambda s: s.seq)]
    sub = ingest_source_flow.with_options(task_runner=runner.build())
    results = []
    with ws.write_lock(wait_s):
        for name in names:
            results.append(sub(workspace, name, config, max_in_flight=runner.max_in_flight))
    return results
