"""Ingest one batch of files: read, de-identify, store pixels, commit one catalog part.

This is the library function the Prefect task wraps. It takes paths and ids, returns counts;
pixels never leave it. Every file of the batch ends as exactly one row in the part.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Callable

import pyarrow as pa

from catalog import schema, vocab
from catalog.files import atomic_write, read_bytes
from catalog.parts import commit_part, write_table
from catalog.pixels import image_id
from catalog.deid import Pseudonymizer
from catalog.store import ImageStore
from catalog.workspace import Workspace
from ingest.readers import Limits, ReadContext, read_frames
from ingest.reasons import Quarantine
from ingest.scan import ScanEntry, SourceUnavailable
from ingest.sources import LabelResolver, Source, load_sources
from ingest.text.screen import screen_frame

log = logging.getLogger("ortho.ingest")


@dataclass
class BatchSpec:
    source: str
    run_id: str
    generation: int
    part_id: str
    entries: list[ScanEntry]
    burned_in: str | None = None  # this run's text policy, over the source's (ingest/text/screen.py)
    limits: Limits | None = None  # this run's read limits (None: the defaults); workers read them from here

    def save(self, path: Path) -> None:
        atomic_write(path, json.dumps({**asdict(self), "entries": [asdict(e) for e in self.entries]}))

    @classmethod
    def load(cls, path: Path) -> "BatchSpec":
        d = json.loads(Path(path).read_text())
        d["entries"] = [ScanEntry(**e) for e in d["entries"]]
        if d.get("limits") is not None:
            d["limits"] = Limits(**d["limits"])
        return cls(**d)


@dataclass
class BatchResult:
    files: int = 0
    images: int = 0
    bytes: int = 0
    quarantined: Counter = field(default_factory=Counter)
    formats: Counter = field(default_factory=Counter)
    cleaned: int = 0  # images whose burned-in text was masked before storing

    def merge(self, other: "BatchResult") -> "BatchResult":
        self.files += other.files
        self.images += other.images
        self.bytes += other.bytes
        self.quarantined.update(other.quarantined)
        self.formats.update(other.formats)
        self.cleaned += other.cleaned
        return self


@lru_cache(maxsize=32)
def _resolver(source_json: str, credentials_dir: str) -> LabelResolver:
    source = Source(**json.loads(source_json))
    options = source.storage_options(Path(credentials_dir))

    def read_text(name: str) -> str:
        path = name if os.path.isabs(name) else None
        if path:
            return Path(path).read_text(encoding="utf-8-sig")
        return read_bytes(source.location, name, 64 << 20, options).decode("utf-8-sig")

    return LabelResolver(source, read_text)


def label_resolver(source: Source, credentials_dir: Path) -> LabelResolver:
    """`credentials_dir`: where file:NAME credentials are (workspace/private/credentials)."""
    return _resolver(json.dumps(asdict(source), sort_keys=True), str(credentials_dir))


def process_batch(ws: Workspace, batch: BatchSpec, limits: Limits | None = None) -> BatchResult:
    """`limits` over the batch's own (the run's), over the defaults."""
    if (ws.parts_dir / batch.part_id).exists():  # committed by an earlier attempt (a worker lost after its commit)
        return committed_result(ws, batch)
    limits = limits or batch.limits or Limits()
    source = load_sources(ws)[batch.source]
    pseudo = Pseudonymizer(ws.secret())
    store = ImageStore(ws.store_dir, tmp_dir=ws.staging_dir)
    resolver = label_resolver(source, ws.credentials_dir)
    now = dt.datetime.now(dt.timezone.utc)
    with source.location_kind.reader(ws, [e.relpath for e in batch.entries]) as read:
        per_file = _arrow_checked([_file_rows(source, entry, batch, pseudo, store, limits, resolver, now, read)
                                   for entry in batch.entries])
    result = batch_result(batch, [r.file for r in per_file], [r.occurrences for r in per_file])
    files = [r.file for r in per_file]
    lineage, occurrences, labels = ([row for r in per_file for row in getattr(r, name)]
                                    for name in ("lineage", "occurrences", "labels"))
    # Lineage first: if the process dies between the two, the re-run writes the same lineage
    # again (the view is DISTINCT) and commits the part; never a part without its lineage.
    write_table(ws.lineage_dir / f"{batch.part_id}.parquet", lineage, schema.LINEAGE, ws.staging_dir)
    commit_part(ws, batch.part_id, {
        "files": (files, schema.FILE_ROW),
        "occurrences": (occurrences, schema.OCCURRENCE),
        "labels": (labels, schema.LABEL),
    })
    return result


def batch_result(batch: BatchSpec, files: list[dict], occurrences: list[list[dict]]) -> BatchResult:
    """The counts of a batch from its file rows and each file's occurrence rows (in the batch's order)."""
    result = BatchResult()
    for entry, file, occ in zip(batch.entries, files, occurrences):
        result.files += 1
        result.images += len(occ)
        result.cleaned += sum(bool(o["pixels_cleaned"]) for o in occ)
        result.bytes += entry.size
        result.formats[file["format"] or "none"] += 1
        if file["outcome"] == "quarantined":
            result.quarantined[file["reason"]] += 1
    return result


def committed_result(ws: Workspace, batch: BatchSpec) -> BatchResult:
    """A committed batch's counts read back from its part, so that a retried task reports what the lost attempt
    did (the run's summary still adds up to every file)."""
    import pyarrow.parquet as pq

    part = ws.parts_dir / batch.part_id
    files = pq.read_table(part / "files.parquet", columns=["file_id", "format", "outcome", "reason"]).to_pylist()
    by_file: dict[str, list[dict]] = {f["file_id"]: [] for f in files}
    for o in pq.read_table(part / "occurrences.parquet", columns=["file_id", "pixels_cleaned"]).to_pylist():
        by_file.setdefault(o["file_id"], []).append(o)
    return batch_result(batch, files, [by_file[f["file_id"]] for f in files])


@dataclass
class FileRows:
    file: dict
    lineage: list[dict] = field(default_factory=list)
    occurrences: list[dict] = field(default_factory=list)
    labels: list[dict] = field(default_factory=list)


def _file_rows(source: Source, entry: ScanEntry, batch: BatchSpec, pseudo: Pseudonymizer, store: ImageStore,
               limits: Limits, resolver: LabelResolver, now: dt.datetime, read: Callable[[str, int], bytes]) -> FileRows:
    """The failure firewall: whatever goes wrong with one file (any reader, hint, label or row), the file ends
    quarantined and the batch goes on. The detail is a reason's or a type name, never an exception's message:
    that can hold a path or a value."""
    out = FileRows(dict(source=source.name, source_seq=source.seq, file_id=None, file_version=entry.version,
                        generation=batch.generation, run_id=batch.run_id, part_id=batch.part_id, format=None,
                        outcome="ok", reason=None, detail=None, n_images=0, bytes=entry.size, committed_at=now,
                        schema_version=schema.SCHEMA_VERSION))
    try:
        file_id = out.file["file_id"] = pseudo.file_id(source.name, entry.relpath)
        out.lineage = [_lineage_row(source, entry, file_id, batch.run_id)]
        occurrences, fmt = _ingest_file(source, entry, file_id, batch, pseudo, store, limits, read)
        labels = _label_rows(source, entry, file_id, batch, resolver, occurrences)
        out.occurrences, out.labels = occurrences, labels
        out.file.update(format=fmt, n_images=len(occurrences))
    except Quarantine as q:
        out.file.update(outcome="quarantined", reason=q.reason, detail=q.detail[:200])
        log.warning("quarantined file %s (source %s): %s - %s", out.file["file_id"], source.name, q.reason, q.detail)
    except SourceUnavailable:
        raise  # the whole source is gone (an archive that stopped answering): the batch is not committed
    except Exception as e:
        if out.file["file_id"] is None:  # a name even the HMAC cannot encode: still one row, keyed by its ascii()
            out.file["file_id"] = pseudo.file_id(source.name, ascii(entry.relpath))
        _internal_error(out, e)
    return out


def _internal_error(out: FileRows, e: Exception) -> None:
    out.file.update(outcome="quarantined", reason="internal_error", detail=type(e).__name__)
    out.occurrences, out.labels = [], []
    log.error("quarantined file %s (source %s): internal_error - %s", out.file["file_id"], out.file["source"],
              type(e).__name__)


_ROW_SCHEMAS = (("lineage", schema.LINEAGE), ("occurrences", schema.OCCURRENCE), ("labels", schema.LABEL))


def _arrow_checked(per_file: list[FileRows]) -> list[FileRows]:
    """A value Arrow cannot take must fail its own file, not the batch's write: the batch is tried
    whole (one conversion, the usual case), and file by file only when that fails."""
    try:
        for name, pa_schema in _ROW_SCHEMAS:
            pa.Table.from_pylist([row for r in per_file for row in getattr(r, name)], schema=pa_schema)
        return per_file
    except Exception:
        pass
    for rows in per_file:
        try:
            for name, pa_schema in _ROW_SCHEMAS:
                pa.Table.from_pylist(getattr(rows, name), schema=pa_schema)
        except Exception as e:
            _internal_error(rows, e)
            rows.lineage = [r for r in rows.lineage if _converts(r, schema.LINEAGE)]
    return per_file


def _converts(row: dict, pa_schema: pa.Schema) -> bool:
    try:
        pa.Table.from_pylist([row], schema=pa_schema)
        return True
    except Exception:
        return False


def _lineage_row(source: Source, entry: ScanEntry, file_id: str, run_id: str) -> dict:
    # A local listing decodes names with surrogateescape: fsencode gives back the bytes on disk, and
    # `path` stays valid UTF-8 (undecodable bytes as \xNN) so that Parquet can hold it.
    raw = os.fsencode(entry.relpath)
    return dict(source=source.name, file_id=file_id, file_version=entry.version, location=source.location,
                path=raw.decode("utf-8", "backslashreplace"), path_bytes=raw, size=entry.size,
                mtime_ns=entry.mtime_ns, run_id=run_id)


def _label_rows(source: Source, entry: ScanEntry, file_id: str, batch: BatchSpec, resolver: LabelResolver,
                occurrences: list[dict]) -> list[dict]:
    if not occurrences:
        return []
    labels = resolver.labels(entry.relpath, source.hints(entry.relpath))
    return [dict(image_id=o["image_id"], task=task, value=value, source=source.name, file_id=file_id,
                 part_id=batch.part_id) for task, value in labels.items() for o in occurrences]


def _ingest_file(source: Source, entry: ScanEntry, file_id: str, batch: BatchSpec, pseudo: Pseudonymizer,
                 store: ImageStore, limits: Limits, read: Callable[[str, int], bytes]) -> tuple[list[dict], str]:
    if entry.problem:
        raise Quarantine(entry.problem)
    if entry.size > limits.max_file_bytes:
        raise Quarantine("too_large", f"{entry.size} bytes exceeds {limits.max_file_bytes}")
    try:
        data = read(entry.relpath, limits.max_file_bytes)
    except SourceUnavailable:
        raise
    except PermissionError:
        raise Quarantine("permission_denied", "file cannot be opened") from None
    except FileNotFoundError:
        raise Quarantine("read_error", "file vanished between listing and reading") from None
    except OSError as e:
        raise Quarantine("read_error", f"{type(e).__name__} errno {getattr(e, 'errno', None)}") from None
    if len(data) > limits.max_file_bytes:
        raise Quarantine("too_large", f"more than {limits.max_file_bytes} bytes")
    if entry.size and len(data) < entry.size:
        raise Quarantine("truncated", f"read {len(data)} of {entry.size} listed bytes")
    hints = source.hints(entry.relpath)
    ctx = ReadContext(pseudo=pseudo, file_id=file_id, hints=hints, defaults=source.defaults, limits=limits,
                      slice_axis=source.slice_axis)
    fmt, frames = read_frames(data, PurePosixPath(entry.relpath).name, ctx)
    del data
    policy = batch.burned_in or source.burned_in
    out = []
    for frame in frames:
        pixels, screening = screen_frame(frame, policy)
        iid = image_id(pixels)
        store.put(iid, pixels)
        attrs = frame.attrs
        if attrs.get("plane") is None and hints.get("plane"):
            attrs["plane"] = vocab.plane(hints["plane"])
        if attrs.get("laterality") is None and hints.get("laterality"):
            attrs["laterality"] = vocab.laterality(hints["laterality"])
        if attrs.get("source_split") is None and hints.get("split"):
            attrs["source_split"] = vocab.split(hints["split"])
        occ = {k: attrs.get(k) for k in schema.OCCURRENCE.names}
        occ.update(image_id=iid, source=source.name, source_seq=source.seq, file_id=file_id,
                   file_version=entry.version, generation=batch.generation, part_id=batch.part_id,
                   rows=int(pixels.shape[0]), cols=int(pixels.shape[1]), bits=8 * pixels.dtype.itemsize,
                   store_path=store.relpath(iid), **screening)
        out.append(occ)
    if not out:
        raise Quarantine("no_pixel_data", "the file decoded to zero images")
    return out, fmt
