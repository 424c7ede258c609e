"""Ingest of one source as a plain function: scan, skip what is done, batch, run, record.

The Prefect flow (flows/ingest.py) calls this with a `map_batches` that submits Prefect tasks;
tests and scripts call it as is (batches run in this process).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from catalog import db, schema
from catalog.publish import publish
from catalog.errors import outcome_of
from catalog.ids import new_run_id
from catalog.parts import write_table
from catalog.deid import Pseudonymizer
from catalog.workspace import Workspace, clear_staging
from ingest.batch import BatchResult, BatchSpec, process_batch
from ingest.config import IngestConfig
from ingest.readers import Limits
from ingest.scan import ScanEntry
from ingest.sources import Source, SourceError, load_sources

log = logging.getLogger("ortho.ingest")

MapBatches = Callable[[Workspace, Iterable[Path]], Iterator[BatchResult]]
COMPACT_PARTS = 256  # batch parts past which a run compacts the catalog (`ortho`: ORTHO_COMPACT_PARTS)


def serial_map(ws: Workspace, batch_paths: Iterable[Path]) -> Iterator[BatchResult]:
    for path in batch_paths:
        yield process_batch(ws, BatchSpec.load(path))


@dataclass
class IngestSummary:
    source: str
    run_id: str
    files_seen: int = 0
    files_skipped: int = 0
    result: BatchResult = field(default_factory=BatchResult)
    pull: dict | None = None  # a PACS source's pull: studies listed, new, complete, failed (ingest/pacs/pull.py)
    skipped: str | None = None  # why the run did not start (a PACS source outside its --hours)

    def as_dict(self) -> dict:
        return {"source": self.source, "run_id": self.run_id, "files_seen": self.files_seen,
                "files_skipped": self.files_skipped, "files_processed": self.result.files,
                "images": self.result.images, "quarantined": dict(self.result.quarantined),
                "text_cleaned": self.result.cleaned, "pull": self.pull, "skipped": self.skipped}


def catalog_state(ws: Workspace, source: str, retry_quarantined: bool,
                  retry_reasons: tuple[str, ...] = ()) -> tuple[int, set[tuple[str, str]]]:
    """The source's completed-run count (its generation) and the file versions already done (a file quarantined
    for one of `retry_reasons`, e.g. an instance a PACS would not give, is not done)."""
    sql = "SELECT file_id, file_version FROM current_files WHERE source = ?"
    if retry_quarantined:
        sql += " AND outcome <> 'quarantined'"
    if retry_reasons:
        sql += " AND coalesce(reason, '') NOT IN (SELECT unnest(?::VARCHAR[]))"
    with db.connection(ws) as con:
        generation = con.execute("SELECT count(*) FROM runs WHERE kind = 'ingest' AND source = ? AND status = 'completed'",
                                 [source]).fetchall()[0][0]
        done = {(r[0], r[1]) for r in con.execute(sql, [source, *([list(retry_reasons)] if retry_reasons else [])]).fetchall()}
    return int(generation), done


def record_run(ws: Workspace, run_id: str, source: str, phase: str, status: str, generation: int,
               summary: IngestSummary | None = None, params: dict | None = None) -> None:
    s = summary.as_dict() if summary else {}
    row = dict(run_id=run_id, kind="ingest", source=source, phase=phase, status=status, generation=generation,
               recorded_at=dt.datetime.now(dt.timezone.utc), files_seen=s.get("files_seen"),
               files_processed=s.get("files_processed"), files_skipped=s.get("files_skipped"),
               images=s.get("images"), quarantined=sum(s.get("quarantined", {}).values()) if s else None,
               params=json.dumps(params or {}))
    write_table(ws.runs_dir / f"{run_id}-{phase}.parquet", [row], schema.RUN, ws.staging_dir)


def plan_batches(ws: Workspace, source: Source, run_id: str, generation: int, batch_size: int,
                 summary: IngestSummary, done: set[tuple[str, str]], burned_in: str | None,
                 limits: Limits | None, entries: Iterable[ScanEntry]) -> Iterator[Path]:
    """Stream the source's listing (`entries`) into batch files under private/lineage/batches; only their paths
    travel further (each file carries the run's policy and limits to whichever process runs it)."""
    pseudo = Pseudonymizer(ws.secret())
    staging = ws.batches_dir / run_id
    staging.mkdir(parents=True, exist_ok=True)
    batch, index = [], 0
    for entry in entries:
        summary.files_seen += 1
        if (pseudo.file_id(source.name, entry.relpath), entry.version) in done:
            summary.files_skipped += 1
            continue
        batch.append(entry)
        if len(batch) >= batch_size:
            yield _save_batch(staging, BatchSpec(source.name, run_id, generation, f"{run_id}-{index:06d}", batch,
                                                 burned_in, limits))
            batch, index = [], index + 1
    if batch:
        yield _save_batch(staging, BatchSpec(source.name, run_id, generation, f"{run_id}-{index:06d}", batch,
                                             burned_in, limits))


def _save_batch(staging: Path, spec: BatchSpec) -> Path:
    path = staging / f"{spec.part_id}.json"
    spec.save(path)
    return path


def _compact_if_needed(ws: Workspace, threshold: int) -> None:
    from catalog.compact import MERGED_PREFIX, compact

    batch_parts = sum(1 for p in ws.parts_dir.iterdir() if not p.name.startswith(MERGED_PREFIX))
    if batch_parts > threshold:
        compact(ws)


def ingest_source(ws: Workspace, name: str, *, batch_size: int = IngestConfig.batch_size,
                  map_batches: MapBatches = serial_map, retry_quarantined: bool = IngestConfig.retry_quarantined, on_batch: Callable[[BatchResult, IngestSummary], None] | None = None,
                  wait_s: float = 0.0, burned_in: str | None = IngestConfig.burned_in, limits: Limits | None = None,
                  compact_parts: int = COMPACT_PARTS) -> IngestSummary:
    """`burned_in` overrides the source's burned-in text policy for this run (mask | quarantine | off); `limits`
    (default: Limits()) bound every file's read; past `compact_parts` batch parts the catalog is compacted."""
    sources = load_sources(ws)
    if name not in sources:
        raise SourceError(f"no source named {name!r}; see `ortho sources list`")
    source = sources[name]
    kind = source.location_kind
    if (hours := kind.closed_hours()) is not None:
        log.info("source %s pulls only in the hours %s; not started", name, hours)
        return IngestSummary(name, "", skipped=f"outside its pull hours {hours}")
    with ws.write_lock(wait_s):
        clear_staging(ws)
        run_id = new_run_id()
        generation, done = catalog_state(ws, name, retry_quarantined, kind.retry_reasons)
        summary = IngestSummary(name, run_id)
        params = {"batch_size": batch_size, "retry_quarantined": retry_quarantined,
                  "burned_in": burned_in or source.burned_in}
        record_run(ws, run_id, name, "started", "running", generation, params=params)
        listing = kind.listing(ws)
        try:
            batches = plan_batches(ws, source, run_id, generation, batch_size, summary, done, burned_in,
                                   limits or Limits(), listing.entries())
            for result in map_batches(ws, batches):
                summary.result.merge(result)
                if on_batch:
                    on_batch(result, summary)
                _compact_if_needed(ws, compact_parts)  # during the run too: parts stay bounded, and so does memory
            summary.pull = listing.finish(run_id)
        except BaseException as e:  # interrupted (Ctrl-C, SIGTERM) or failed: a re-run continues either way
            record_run(ws, run_id, name, "finished", outcome_of(e), generation, summary, params)
            raise
        record_run(ws, run_id, name, "finished", "completed", generation, summary, params)
        shutil.rmtree(ws.batches_dir / run_id, ignore_errors=True)
        _compact_if_needed(ws, compact_parts)
        publish(ws)
    log.info("ingested source %s: %d files seen, %d new, %d already done, %d images, %d quarantined",
             name, summary.files_seen, summary.result.files, summary.files_skipped, summary.result.images,
             sum(summary.result.quarantined.values()))
    return summary
