"""The `ortho` command line."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import flows  # noqa: F401  (Prefect defaults before Prefect is imported)
import typer
from rich.console import Console
from rich.table import Table

from catalog import db
from catalog.workspace import Workspace, WorkspaceBusy
from flows import progress as progress_hooks
from flows.firewall import ScrubbedError
from ingest.scan import SourceUnavailable

app = typer.Typer(help="OrthoFoundation data platform: ingest, catalog, curate, shard, pretrain, evaluate.",
                  no_args_is_help=True, add_completion=False,
                  pretty_exceptions_show_locals=False)  # a local can hold a path or a value
sources_app = typer.Typer(help="Register and list image sources.", no_args_is_help=True)
app.add_typer(sources_app, name="sources")
shards_app = typer.Typer(help="Build, list, verify and inspect WebDataset shard sets.", no_args_is_help=True)
app.add_typer(shards_app, name="shards")

console = Console()
err = Console(stderr=True)

WorkspaceOpt = Annotated[Optional[Path], typer.Option("--workspace", "-w", envvar="ORTHO_WORKSPACE",
                                                      help="Workspace folder [default: ./workspace]")]


def _ws(path: Optional[Path]) -> Workspace:
    return Workspace.open(path)


def _fail(message: str, code: int = 2) -> None:
    err.print(f"[red]error:[/red] {message}", soft_wrap=True)  # one line, never wrapped
    raise typer.Exit(code)


def _setup_logging(ws: Workspace, name: str) -> Path:
    """Warnings to the console (one line each, file ids only) and everything to workspace/logs."""
    log = logging.getLogger("ortho")
    log.setLevel(logging.INFO)
    for h in list(log.handlers):
        log.removeHandler(h)
    path = ws.logs_dir / f"{name}.log"
    fh = logging.FileHandler(path)
    fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    fh.setLevel(logging.INFO)
    log.addHandler(fh)
    ch = logging.StreamHandler(sys.stderr)
    ch.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    ch.setLevel(logging.WARNING)
    log.addHandler(ch)
    log.propagate = False
    return path


# --- sources ---------------------------------------------------------------------------------

@sources_app.command("add")
def sources_add(
    name: str,
    location: str = typer.Argument(..., help="A local folder or an fsspec URL (s3://bucket/prefix, ...)"),
    kind: str = typer.Option("internal", help="internal | public | phantom (a synthetic tree drawn on first ingest)"),
    labels: list[str] = typer.Option([], "--labels", help="folder:TASK | pattern:TASK | csv:FILE[:key=COL][:prefix=P]; repeatable"),
    path_pattern: Optional[str] = typer.Option(None, help="Regex with named groups patient, laterality, split, exam, label, plane, view"),
    modality: Optional[str] = typer.Option(None, help="Modality for files without a header (e.g. DX, MR)"),
    body_part: Optional[str] = typer.Option(None, help="Body part for files without a header (e.g. knee)"),
    slice_axis: str = typer.Option("auto", help="NIfTI slicing: auto (acquisition plane), 0, 1, 2 or all"),
    burned_in: str = typer.Option("mask", help="Text burned into pixels: mask it (default), quarantine the file, "
                                               "or off (not screened; exports claim nothing)"),
    replace: bool = typer.Option(False, help="Change the settings of an existing source"),
    workspace: WorkspaceOpt = None,
) -> None:
    """Register a source of images."""
    from ingest.sources import Source, SourceError, add_source

    try:
        src = add_source(_ws(workspace), Source(name, location, kind, labels=list(labels), path_pattern=path_pattern,
                                                modality=modality, body_part=body_part, slice_axis=slice_axis,
                                                burned_in=burned_in), replace=replace)
    except SourceError as e:
        _fail(str(e))
    console.print(f"source [bold]{src.name}[/bold] registered ({src.kind}, #{src.seq})")


@sources_app.command("list")
def sources_list(workspace: WorkspaceOpt = None, as_json: bool = typer.Option(False, "--json")) -> None:
    """Show registered sources (locations are private: shown only here, to you)."""
    from dataclasses import asdict

    from ingest.sources import load_sources

    sources = sorted(load_sources(_ws(workspace)).values(), key=lambda s: s.seq)
    if as_json:
        print(json.dumps([asdict(s) for s in sources], indent=2))
        return
    table = Table("#", "name", "kind", "location", "labels", "path pattern", title="sources")
    for s in sources:
        table.add_row(str(s.seq), s.name, s.kind, s.location, ", ".join(s.labels), s.path_pattern or "")
    console.print(table)


# --- ingest ----------------------------------------------------------------------------------

@app.command()
def ingest(
    names: Annotated[Optional[list[str]], typer.Argument(help="Sources to ingest [default: all]")] = None,
    batch_size: int = typer.Option(64, help="Files per Prefect task"),
    runner: str = typer.Option("processes", help="Task runner: threads, processes, dask or ray"),
    workers: Optional[int] = typer.Option(None, help="Parallel workers [default: CPU count]"),
    retry_quarantined: bool = typer.Option(False, help="Read quarantined files again"),
    wait: float = typer.Option(0.0, help="Seconds to wait for another process writing to the workspace"),
    burned_in: Optional[str] = typer.Option(None, help="This run's burned-in text policy (mask, quarantine, off) "
                                                       "[default: each source's]"),
    workspace: WorkspaceOpt = None,
) -> None:
    """Ingest registered sources: de-identify, store pixels, catalog every file."""
    from ingest.sources import SourceError, check_burned_in

    ws = _ws(workspace)
    try:
        if burned_in:
            check_burned_in(burned_in)
    except SourceError as e:
        _fail(str(e))
    run_ingest(ws, names or None, batch_size=batch_size, runner=runner, workers=workers,
               retry_quarantined=retry_quarantined, wait=wait, burned_in=burned_in)


def run_ingest(ws: Workspace, names: list[str] | None, batch_size: int = 64, runner: str = "processes",
               workers: int | None = None, retry_quarantined: bool = False, wait: float = 0.0,
               burned_in: str | None = None) -> list[dict]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from flows import ingest as ingest_flows
    from ingest.sources import load_sources

    known = load_sources(ws)
    if not known:
        _fail("no sources registered; add one with `ortho sources add NAME LOCATION`")
    missing = [n for n in names or [] if n not in known]
    if missing:
        _fail(f"unknown source(s): {', '.join(missing)}; see `ortho sources list`")
    log_path = _setup_logging(ws, "ingest")
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("files · {task.fields[images]} images · {task.fields[quarantined]} quarantined"),
                  TimeElapsedColumn(), console=err, transient=False) as progress:
        bars: dict[str, int] = {}

        def on_batch(result, summary):
            if summary.source not in bars:
                bars[summary.source] = progress.add_task(summary.source, total=None, images=0, quarantined=0)
            tid = bars[summary.source]
            progress.update(tid, completed=summary.result.files, total=summary.files_seen - summary.files_skipped,
                            images=summary.result.images, quarantined=sum(summary.result.quarantined.values()))

        progress_hooks.hooks["ingest"] = on_batch
        try:
            results = ingest_flows.ingest_flow(str(ws.root), names, batch_size=batch_size, runner=runner,
                                               workers=workers, retry_quarantined=retry_quarantined, wait_s=wait,
                                               burned_in=burned_in)
        except WorkspaceBusy as e:
            _fail(str(e), code=75)
        except SourceUnavailable as e:
            _fail(str(e))
        except ScrubbedError as e:  # one line that names a type, never an exception's text
            _fail(str(e), code=1)
        finally:
            progress_hooks.hooks.pop("ingest", None)
    print_ingest_summary(ws, results)
    err.print(f"log: {log_path}")
    return results


def print_ingest_summary(ws: Workspace, results: list[dict]) -> None:
    table = Table("source", "seen", "new", "already done", "ingested", "duplicate", "quarantined", "images",
                  "text cleaned", title="ingest summary (this run)")
    con = db.connect(ws)
    try:
        for r in results:
            run_id = r["run_id"]
            counts = dict(con.execute("SELECT status, count(*) FROM files WHERE run_id = ? GROUP BY status", [run_id]).fetchall())
            table.add_row(r["source"], str(r["files_seen"]), str(r["files_processed"]), str(r["files_skipped"]),
                          str(counts.get("ingested", 0)), str(counts.get("duplicate", 0)),
                          str(counts.get("quarantined", 0)), str(r["images"]), str(r.get("text_cleaned", 0)))
        console.print(table)
        reasons = con.execute("""SELECT source, reason, count(*) FROM files WHERE status = 'quarantined'
                                 AND run_id IN (SELECT unnest(?)) GROUP BY ALL ORDER BY ALL""",
                              [[r["run_id"] for r in results]]).fetchall()
    finally:
        con.close()
    if reasons:
        qt = Table("source", "reason", "files", title="quarantined this run, by reason")
        for source, reason, n in reasons:
            qt.add_row(source, reason, str(n))
        console.print(qt)


# --- curate ----------------------------------------------------------------------------------

@app.command()
def curate(
    runner: str = typer.Option("processes", help="Task runner: threads, processes, dask or ray"),
    workers: Optional[int] = typer.Option(None, help="Parallel workers [default: CPU count]"),
    wait: float = typer.Option(0.0, help="Seconds to wait for another process writing to the workspace"),
    crops: bool = typer.Option(True, "--crops/--no-crops",
                               help="Also search for cropped re-exports (local features; docs/catalog.md)"),
    workspace: WorkspaceOpt = None,
) -> None:
    """Near-duplicates, quality flags, patient-level splits and the leakage guard, incrementally."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from flows import curate as curate_flows

    ws = _ws(workspace)
    _setup_logging(ws, "curate")
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err) as progress:
        bar = progress.add_task("signatures", total=None)
        progress_hooks.hooks["curate"] = lambda stage, done, total: progress.update(bar, completed=done, total=total)
        try:
            summary = curate_flows.run_curate(str(ws.root), runner=runner, workers=workers, wait_s=wait, crops=crops)
        except WorkspaceBusy as e:
            _fail(str(e), code=75)
        except ScrubbedError as e:
            _fail(str(e), code=1)
        finally:
            progress_hooks.hooks.pop("curate", None)
    print_curate_summary(summary)


METHOD_NAMES = {"embedding": "the global signature", "embedding_flip": "the mirrored signature",
                "crop": "the crop search"}


def print_curate_summary(s: dict) -> None:
    if not s["images"]:
        console.print("the catalog holds no images yet: nothing to curate (run `ortho ingest` first)")
        return
    t = Table("", "images", title="curation")
    for label, value in (("images in the catalog", s["images"]), ("new signatures", s["new_signatures"]),
                         ("new patients given a split", s["new_patients"]), ("near-duplicate groups", s["dup_groups"]),
                         ("near-duplicates (not representative)", s["near_duplicates"]),
                         *((f"  images matched by {METHOD_NAMES.get(m, m)}", n) for m, n in s.get("matched_by", {}).items()),
                         ("excluded from training selections", s["excluded"]),
                         ("held out by the leakage guard", s["leakage_removed"])):
        t.add_row(label, str(value))
    console.print(t)
    c = s.get("crop_search") or {}
    if c.get("descriptors"):
        console.print(f"crop search: {c['votes']:,} descriptor matches -> {c['candidates']:,} candidate pairs -> "
                      f"{c['transforms']:,} aligned -> {c['verified']:,} verified crops")
    tq = Table("quality flag", "images", title="quality (flags; `ortho sql \"SELECT * FROM quality\"`)")
    for reason, n in s["quality"].items():
        tq.add_row(reason, str(n))
    console.print(tq)
    ts = Table("split", "images", title="patient-level splits")
    for split, n in s["splits"].items():
        ts.add_row(str(split), str(n))
    console.print(ts)


# --- tasks -----------------------------------------------------------------------------------

tasks_app = typer.Typer(help="Downstream tasks and their labels.", no_args_is_help=True)
app.add_typer(tasks_app, name="tasks")


@tasks_app.command("list")
def tasks_list(workspace: WorkspaceOpt = None, as_json: bool = typer.Option(False, "--json")) -> None:
    """Tasks with their type, anatomy and modality, and labelled images per split and class."""
    from curation.tasks import describe

    ws = _ws(workspace)
    con = db.connect(ws)
    try:
        rows = con.execute("""SELECT l.task, coalesce(i.split, 'unsplit') AS split, l.value, count(DISTINCT l.image_id)
                              FROM labels l JOIN images i USING (image_id) GROUP BY ALL ORDER BY ALL""").fetchall()
    finally:
        con.close()
    counts: dict[str, dict[str, dict[str, int]]] = {}
    for task, split, value, n in rows:
        counts.setdefault(task, {}).setdefault(split, {})[value] = n
    if as_json:
        print(json.dumps({t: {"spec": describe(t, {v for s in c.values() for v in s}).__dict__, "counts": c}
                          for t, c in counts.items()}, indent=2))
        return
    table = Table("task", "type", "anatomy", "modality", "level", "split", "images by class", title="tasks")
    for task, by_split in counts.items():
        spec = describe(task, {v for s in by_split.values() for v in s})
        for k, (split, by_class) in enumerate(sorted(by_split.items())):
            classes = "  ".join(f"{c}: {n}" for c, n in sorted(by_class.items()))
            head = (task, spec.kind, spec.anatomy, spec.modality, spec.level) if k == 0 else ("",) * 5
            table.add_row(*head, split, classes)
    console.print(table if counts else "no labels in the catalog yet")


# --- export ----------------------------------------------------------------------------------

export_app = typer.Typer(help="Export de-identified data.", no_args_is_help=True)
app.add_typer(export_app, name="export")


@export_app.command("dicom")
def export_dicom(
    query: str = typer.Option(..., "--query", help="SQL returning image_id; their DICOM files are exported"),
    out: Path = typer.Option(..., "--out", help="Output folder (patient pseudonym / study / file id .dcm)"),
    modified_dates: bool = typer.Option(True, help="Retain Longitudinal Temporal Information with Modified Dates"),
    retain_patient_characteristics: bool = typer.Option(False, help="Keep sex, age, size and weight"),
    allow_burned_in: bool = typer.Option(False, help="Also export unscreened objects that declare burned-in annotation"),
    workspace: WorkspaceOpt = None,
) -> None:
    """De-identified DICOM per PS3.15 Annex E (Basic Profile, safe-attribute allow-list, keyed UIDs)."""
    import duckdb

    from curation.export_dicom import ExportOptions, export_selection

    ws = _ws(workspace)
    try:
        result = export_selection(ws, query, out, ExportOptions(modified_dates, retain_patient_characteristics,
                                                                  allow_burned_in))
    except duckdb.Error as e:
        _fail(f"query failed: {str(e).splitlines()[0]}")
    console.print(f"exported {len(result.written)} DICOM files to {out}")
    for reason, n in result.skipped.items():
        console.print(f"skipped {n}: {reason}")


# --- catalog maintenance -------------------------------------------------------------------

catalog_app = typer.Typer(help="Catalog maintenance.", no_args_is_help=True)
app.add_typer(catalog_app, name="catalog")


@catalog_app.command("compact")
def catalog_compact(wait: float = typer.Option(0.0, help="Seconds to wait for another writer"),
                    workspace: WorkspaceOpt = None) -> None:
    """Merge the small per-batch catalog parts into one (ingest does this itself past 256 parts)."""
    from catalog.compact import compact

    try:
        before, after = compact(_ws(workspace), wait_s=wait)
    except WorkspaceBusy as e:
        _fail(str(e), code=75)
    console.print(f"catalog parts: {before} -> {after}")


# --- sql -------------------------------------------------------------------------------------

@app.command()
def sql(
    query: str = typer.Argument(..., help="SQL over the views files, images, labels, runs"),
    fmt: str = typer.Option("table", "--format", help="table | csv | json | parquet"),
    out: Optional[Path] = typer.Option(None, "--out", help="Write to this file instead of the screen"),
    workspace: WorkspaceOpt = None,
) -> None:
    """Query the catalog with DuckDB SQL."""
    import duckdb

    if fmt not in ("table", "csv", "json", "parquet"):
        _fail("--format must be table, csv, json or parquet")
    if fmt == "parquet" and out is None:
        _fail("--format parquet needs --out FILE")
    ws = _ws(workspace)
    con = db.connect(ws)
    try:
        if fmt in ("csv", "parquet") and out is not None:
            target = str(out).replace("'", "''")
            opts = "FORMAT csv, HEADER true" if fmt == "csv" else "FORMAT parquet"
            con.execute(f"COPY ({query.rstrip().rstrip(';')}) TO '{target}' ({opts})")
            err.print(f"wrote {out}")
            return
        cur = con.execute(query)
        cols = [d[0] for d in cur.description] if cur.description else []
        rows = cur.fetchall()
    except duckdb.Error as e:
        _fail(str(e).splitlines()[0])
    finally:
        con.close()
    if fmt == "table":
        table = Table(*cols)
        for row in rows:
            table.add_row(*("" if v is None else str(v) for v in row))
        if out:
            with open(out, "w") as f:
                Console(file=f, width=200).print(table)
        else:
            console.print(table)
        return
    if fmt == "json":
        text = json.dumps([dict(zip(cols, row)) for row in rows], default=str, indent=1)
    else:
        import csv
        import io

        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(cols)
        writer.writerows(rows)
        text = buf.getvalue()
    if out:
        out.write_text(text)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


# --- status and lineage ----------------------------------------------------------------------

@app.command()
def status(workspace: WorkspaceOpt = None, as_json: bool = typer.Option(False, "--json")) -> None:
    """The workspace on one screen: sources, files by status, images by modality and body part, labels,
    shard sets, pretraining runs, evaluations and the latest failures."""
    data = workspace_status(_ws(workspace))
    if as_json:
        print(json.dumps(data, indent=2, default=str))
        return
    print_status(data)


def workspace_status(ws: Workspace) -> dict:
    from ingest.sources import load_sources
    from shards.writer import list_shard_sets

    con = db.connect(ws)
    try:
        q = lambda sql: con.execute(sql).fetchall()  # noqa: E731
        files = q("SELECT source, status, count(*) FROM files GROUP BY ALL ORDER BY ALL")
        images = q("SELECT modality, body_part, count(*), count(*) FILTER (WHERE excluded) FROM images "
                   "GROUP BY ALL ORDER BY ALL")
        reasons = q("SELECT reason, count(*) FROM files WHERE status='quarantined' GROUP BY ALL ORDER BY 2 DESC")
        labels = q("SELECT task, count(DISTINCT image_id) FROM labels GROUP BY ALL ORDER BY ALL")
        splits = q("SELECT split, count(*) FROM splits GROUP BY ALL ORDER BY ALL")
        ingests = q("SELECT run_id, kind, source, status, files_processed, images, finished_at FROM runs "
                    "WHERE kind <> 'pretrain' ORDER BY started_at DESC LIMIT 5")
        pretrains = q("SELECT run_id, source, status, params, started_at FROM runs WHERE kind = 'pretrain' "
                      "ORDER BY started_at DESC LIMIT 5")
        evals = q("SELECT eval_id, string_agg(DISTINCT task, ', '), count(*), max(recorded_at) FROM evals "
                  "GROUP BY ALL ORDER BY 4 DESC LIMIT 5")
        failures = q("SELECT file_id, source, reason, committed_at FROM files WHERE status = 'quarantined' "
                     "ORDER BY committed_at DESC, file_id LIMIT 5")
        failed_runs = q("SELECT run_id, kind, status, started_at FROM runs WHERE status = 'failed' "
                        "ORDER BY started_at DESC LIMIT 5")
    finally:
        con.close()
    sources = sorted(load_sources(ws).values(), key=lambda s: s.seq)
    pretrain_rows = []
    for run_id, shard_set, st, params, started in pretrains:
        p = json.loads(params or "{}")
        pretrain_rows.append({"run_id": run_id, "shard_set": shard_set, "status": st, "steps": p.get("steps"),
                              "loss": p.get("loss"), "started": started})
    return {
        "workspace": str(ws.root),
        "sources": [{"name": s.name, "kind": s.kind} for s in sources],
        "files": [{"source": a, "status": b, "count": c} for a, b, c in files],
        "images": [{"modality": a, "body_part": b, "count": c, "excluded": e} for a, b, c, e in images],
        "quarantine_reasons": {a: b for a, b in reasons},
        "labels": {a: b for a, b in labels},
        "patients_by_split": {a: b for a, b in splits},
        "shard_sets": [{"name": m.name, "samples": m.samples, "shards": len(m.shards), "bytes": m.bytes,
                        "created": m.created, "evaluation": m.evaluation} for m in list_shard_sets(ws)],
        "recent_runs": [dict(zip(("run_id", "kind", "source", "status", "files", "images", "finished"), r))
                        for r in ingests],
        "pretraining_runs": pretrain_rows,
        "evaluations": [{"eval_id": a, "tasks": b, "results": c, "recorded": d} for a, b, c, d in evals],
        "last_failures": {"files": [dict(zip(("file_id", "source", "reason", "at"), r)) for r in failures],
                          "runs": [dict(zip(("run_id", "kind", "status", "at"), r)) for r in failed_runs]},
    }


def print_status(data: dict) -> None:
    def table(title: str, columns: list[str], rows: list[list]) -> None:
        if rows:
            t = Table(*columns, title=title)
            for row in rows:
                t.add_row(*("" if v is None else str(v) for v in row))
            console.print(t)

    by_source: dict[str, dict[str, int]] = {}
    for f in data["files"]:
        by_source.setdefault(f["source"], {})[f["status"]] = f["count"]
    table(f"workspace {data['workspace']}", ["source", "kind", "ingested", "duplicate", "quarantined"],
          [[s["name"], s["kind"], *(by_source.get(s["name"], {}).get(k, 0) for k in
                                    ("ingested", "duplicate", "quarantined"))] for s in data["sources"]])
    table("images", ["modality", "body part", "images", "excluded"],
          [[i["modality"], i["body_part"], i["count"], i["excluded"]] for i in data["images"]])
    table("labels", ["task", "labelled images"], [[k, v] for k, v in data["labels"].items()])
    table("patients by split", ["split", "patients"], [[k, v] for k, v in data["patients_by_split"].items()])
    table("quarantined", ["reason", "files"], [[k, v] for k, v in data["quarantine_reasons"].items()])
    table("shard sets", ["name", "samples", "shards", "MB", "created"],
          [[m["name"] + (" (evaluation)" if m["evaluation"] else ""), m["samples"], m["shards"],
            f"{m['bytes'] / 1e6:.1f}", m["created"]] for m in data["shard_sets"]])
    table("recent ingest and curation runs", ["run", "kind", "source", "status", "files", "images"],
          [[r["run_id"], r["kind"], r["source"], r["status"], r["files"], r["images"]] for r in data["recent_runs"]])
    table("pretraining runs", ["run", "shard set", "status", "steps", "loss"],
          [[r["run_id"], r["shard_set"], r["status"], r["steps"],
            f"{r['loss']:.3f}" if isinstance(r["loss"], (int, float)) else ""] for r in data["pretraining_runs"]])
    table("evaluations", ["eval", "tasks", "results", "recorded"],
          [[e["eval_id"], e["tasks"], e["results"], e["recorded"]] for e in data["evaluations"]])
    fail = data["last_failures"]
    table("latest quarantined files (ortho lineage FILE_ID tells where from)", ["file id", "source", "reason"],
          [[f["file_id"], f["source"], f["reason"]] for f in fail["files"]])
    table("failed runs", ["run", "kind", "at"], [[r["run_id"], r["kind"], r["at"]] for r in fail["runs"]])


@app.command()
def lineage(file_id: str, workspace: WorkspaceOpt = None) -> None:
    """Look up where a file id came from (the private lineage table; prints a path, which may be identifying)."""
    ws = _ws(workspace)
    con = db.connect(ws, private=True)
    try:
        rows = con.execute("SELECT DISTINCT source, location, path, size, run_id FROM lineage WHERE file_id = ?", [file_id]).fetchall()
    finally:
        con.close()
    if not rows:
        _fail(f"no file with id {file_id}")
    for source, location, path, size, run_id in rows:
        _print_plain(f"{file_id}  source={source}  path={os.path.join(location, path)}  bytes={size}  run={run_id}")


def _print_plain(line: str) -> None:
    """Not through rich (a path is not markup); what the terminal's encoding lacks is escaped, never a crash."""
    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
    sys.stdout.write(line.encode(encoding, "backslashreplace").decode(encoding) + "\n")


# --- shards ----------------------------------------------------------------------------------

@shards_app.command("build")
def shards_build(
    name: str,
    query: str = typer.Option(..., "--query", help="SQL returning image_id, e.g. SELECT image_id FROM images WHERE body_part='knee'"),
    include_excluded: bool = typer.Option(False, help="Keep images curation excluded (quality, duplicates, leakage guard)"),
    evaluation: bool = typer.Option(False, help="An evaluation set: keep held-out (val/test) images, still drop excluded ones"),
    target_size: str = typer.Option("512MB", help="Approximate bytes per shard"),
    samples_per_shard: Optional[int] = typer.Option(None, help="Cut shards by sample count instead of size"),
    seed: int = typer.Option(0, help="Seed of the sample order"),
    overwrite: bool = typer.Option(False, help="Replace an existing shard set of this name"),
    runner: str = typer.Option("threads", help="Task runner: threads, processes, dask or ray"),
    workers: Optional[int] = typer.Option(None, help="Shards written in parallel [default: CPU count]"),
    workspace: WorkspaceOpt = None,
) -> None:
    """Write a shard set from a SQL selection: tars + manifest.json with checksums."""
    from flows.shards import run_build
    from shards.select import SelectionError
    from shards.writer import ShardError

    ws = _ws(workspace)
    try:
        with err.status(f"building shard set {name}"):
            result = run_build(str(ws.root), name, query, runner=runner, workers=workers, include_excluded=include_excluded,
                               evaluation=evaluation,
                               seed=seed, target_size=target_size, samples_per_shard=samples_per_shard, overwrite=overwrite)
    except (SelectionError, ShardError) as e:
        _fail(str(e))
    except ScrubbedError as e:
        _fail(str(e), code=1)
    verb = "built" if result["built"] else "up to date:"
    console.print(f"{verb} {result['samples']} samples in {result['shards']} shards -> {result['manifest']}")
    show_manifest(Path(result["manifest"]))


@shards_app.command("list")
def shards_list(workspace: WorkspaceOpt = None) -> None:
    """Shard sets of the workspace."""
    from shards.writer import list_shard_sets

    t = Table("name", "samples", "shards", "MB", "created", "query", title="shard sets")
    for m in list_shard_sets(_ws(workspace)):
        t.add_row(m.name, str(m.samples), str(len(m.shards)), f"{m.bytes / 1e6:.1f}", m.created, m.query)
    console.print(t)


@shards_app.command("verify")
def shards_verify(manifest: Path, no_decode: bool = typer.Option(False, help="Checksums and counts only")) -> None:
    """Re-hash every shard, check sample counts, decode every sample. Exit 1 on any problem."""
    from shards.verify import verify

    if not manifest.exists():
        _fail(f"no manifest at {manifest}")
    problems = verify(manifest, decode=not no_decode)
    for p in problems:
        err.print(f"[red]bad shard[/red] {p}")
    if problems:
        raise typer.Exit(1)
    console.print(f"ok: every shard of {manifest.parent.name} matches its manifest")


@shards_app.command("show")
def shards_show(manifest: Path) -> None:
    """Counts by modality, body part, source and split; bytes; query; catalog snapshot."""
    if not manifest.exists():
        _fail(f"no manifest at {manifest}")
    show_manifest(manifest)


def show_manifest(path: Path) -> None:
    from shards.manifest import Manifest

    m = Manifest.read(path)
    console.print(f"[bold]{m.name}[/bold]: {m.samples} samples, {len(m.shards)} shards, {m.bytes / 1e6:.1f} MB, "
                  f"created {m.created}, seed {m.seed}")
    console.print(f"query: {m.query}" + ("  (exclusions ignored)" if m.include_excluded else ""))
    console.print(f"catalog snapshot: {m.catalog_snapshot['parts']} parts, last {m.catalog_snapshot['last_part']}")
    t = Table("attribute", "value", "samples", title="counts")
    for attr, values in m.counts.items():
        for value, n in values.items():
            t.add_row(attr, value, str(n))
    console.print(t)


# --- demo ------------------------------------------------------------------------------------

@app.command()
def phantom(root: Path = typer.Argument(Path("demo-data/phantom")), seed: int = 0, patients: int = 6,
            hips: bool = typer.Option(False, help="Add graded hip radiographs (a second anatomy, task hip_kl_grade)"),
            poses: bool = typer.Option(True, help="Position and expose each knee radiograph differently, as real "
                                                  "ones are (--no-poses: all alike)")) -> None:
    """Write the synthetic phantom tree (PACS-like DICOM with planted PHI, NIfTI, PNG, broken files)."""
    from ingest.phantom import write_phantom

    console.print(f"phantom tree at {write_phantom(root, seed=seed, n_patients=patients, hips=hips, poses=poses)}")


# --- pretraining -----------------------------------------------------------------------------

@app.command()
def pretrain(
    overrides: Annotated[Optional[list[str]], typer.Argument(help="Config overrides, key=value (optim.lr=2e-4)")] = None,
    manifest: Optional[Path] = typer.Option(None, help="Shard set manifest.json to train on"),
    config: Optional[Path] = typer.Option(None, help="Config YAML (e.g. configs/pretrain/vits16.yaml)"),
    resume: Optional[Path] = typer.Option(None, help="Continue the run in this folder (after a kill, or --until)"),
    run_dir: Optional[Path] = typer.Option(None, help="Run folder [default: WORKSPACE/runs/<run_id>]"),
    nproc: int = typer.Option(1, help="Processes (GPUs) on this machine; >1 launches torchrun"),
    launcher: str = typer.Option("local", help="local, or a command template with {command} (sbatch, ...)"),
    until: Optional[int] = typer.Option(None, help="Pause after this step with a checkpoint"),
    workspace: WorkspaceOpt = None,
) -> None:
    """Self-supervised pretraining (DINOv3-style) of a timm ViT, streamed from a shard manifest."""
    from flows.pretrain import pretrain_flow
    from training.backbone import CheckpointError
    from training.config import ConfigError
    from training.data import TrainingError

    ws = _ws(workspace)
    _setup_logging(ws, "pretrain")
    if not resume and not manifest:
        _fail("give --manifest (a new run) or --resume RUN_DIR")
    try:
        summary = pretrain_flow(str(ws.root), manifest=str(manifest) if manifest else None,
                                config=str(config) if config else None, overrides=list(overrides or []),
                                resume=str(resume) if resume else None, run_dir=str(run_dir) if run_dir else None,
                                nproc=nproc, launcher=launcher, until=until)
    except (TrainingError, ConfigError, CheckpointError) as e:
        _fail(str(e))
    except ScrubbedError as e:
        _fail(str(e), code=1)
    print_pretrain_summary(summary)


def print_pretrain_summary(s: dict) -> None:
    if "submitted" in s:
        console.print(f"submitted run {s['run_id']}: {s['submitted']}")
        return
    run_dir = Path(s["run_dir"])
    t = Table("", "", title=f"pretraining run {s['run_id']}")
    t.add_row("run folder", str(run_dir))
    t.add_row("steps", str(s.get("steps")))
    if s.get("loss") is not None:
        t.add_row("last loss", f"{s['loss']:.4f}")
    last = s.get("last") or {}
    for key in ("dino", "ibot", "koleo", "gram", "images_per_s", "teacher_batch_entropy", "cls_std"):
        if key in last:
            t.add_row(key, f"{last[key]:.4g}")
    if s.get("collapse_warnings"):
        t.add_row("collapse warnings", ", ".join(s["collapse_warnings"]))
    t.add_row("backbone", str(run_dir / "backbone.safetensors") if s.get("completed") else
              f"not yet: continue with ortho pretrain --resume {run_dir}")
    if (run_dir / "losses.png").exists():
        t.add_row("loss curves", str(run_dir / "losses.png"))
    console.print(t)


# --- evaluation ------------------------------------------------------------------------------

def _csv(values: Optional[list[str]], cast=str) -> list:
    """Repeated options and comma-separated lists alike: --task a --task b,c -> [a, b, c]."""
    out = []
    for v in values or []:
        out += [cast(x.strip()) for x in str(v).split(",") if x.strip()]
    return out


@app.command()
def evaluate(
    checkpoint: Path = typer.Option(..., help="backbone.safetensors of a run, a run folder, or (with --model) "
                                              "any local timm/DINOv3 checkpoint"),
    task: Annotated[list[str], typer.Option(help="Task name(s), repeated or comma-separated (ortho tasks list)")] = ...,
    protocol: str = typer.Option("linear,knn", help="linear, knn, finetune (comma-separated)"),
    label_fractions: str = typer.Option("1.0", help="Fractions of training patients, e.g. 0.125,0.25,0.5,1.0"),
    baseline: Annotated[Optional[list[str]], typer.Option(
        help="random, supervised, pixels, or a local checkpoint (ARCH=PATH for non-exported files); repeatable")] = None,
    seeds: int = typer.Option(3, help="Seeds per label fraction (label subset, init, fine-tuning order)"),
    model: Optional[str] = typer.Option(None, help="Architecture of --checkpoint when it is not an exported backbone"),
    pool: str = typer.Option("both", help="Frozen features: cls, mean (of patch tokens) or both"),
    knn_k: str = typer.Option("10,20,50", help="kNN k values; the best on val is used"),
    epochs: int = typer.Option(5, help="Fine-tuning epochs (the supervised baseline gets the same budget)"),
    finetune_lr: float = typer.Option(5e-4, help="Fine-tuning learning rate of the head (layer-wise decay below)"),
    finetune_blocks: int = typer.Option(-1, help="Fine-tune only the last N blocks (-1: all)"),
    exam_aggregation: str = typer.Option("mean", help="Slices -> exam for exam-level tasks: mean or max"),
    bootstrap: int = typer.Option(1000, help="Bootstrap draws over patients for the 95% CIs"),
    shards: Optional[Path] = typer.Option(None, help="Read images and labels from this shard set's manifest "
                                                     "(built with --evaluation) instead of the store"),
    eval_id: Optional[str] = typer.Option(None, help="Name of the evaluation [default: eval-<time>]"),
    report: bool = typer.Option(True, help="Render evals/<eval_id>/report.html"),
    workspace: WorkspaceOpt = None,
) -> None:
    """Evaluate a checkpoint on downstream tasks: kNN, linear probe, fine-tuning, label efficiency, baselines."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from evaluation.data import EvaluationError
    from flows.evaluate import evaluate_flow
    from training.backbone import CheckpointError

    ws = _ws(workspace)
    _setup_logging(ws, "evaluate")
    try:
        fractions = _csv([label_fractions], float)
        ks = tuple(_csv([knn_k], int))
    except ValueError as e:
        _fail(f"not a number: {e}")
    settings = dict(protocols=_csv([protocol]), fractions=fractions, seeds=seeds,
                    baselines=_csv(baseline) if baseline is not None else ["random"], pool=pool, knn_ks=ks,
                    exam_aggregation=exam_aggregation, n_boot=bootstrap,
                    finetune=dict(epochs=epochs, lr=finetune_lr, blocks=finetune_blocks))
    with Progress(TextColumn("[bold]evaluate"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.description}"), console=console, transient=True) as bar:
        job = bar.add_task("loading", total=None)
        progress_hooks.hooks["evaluate"] = lambda done, total, label: bar.update(job, completed=done, total=total,
                                                                                  description=label)
        try:
            summary = evaluate_flow(str(ws.root), str(checkpoint), _csv(task), settings, eval_id=eval_id,
                                    model_name=model, report=report, shards=str(shards) if shards else None)
        except (EvaluationError, CheckpointError) as e:
            _fail(str(e))
        except ScrubbedError as e:
            _fail(str(e), code=1)
        finally:
            progress_hooks.hooks.pop("evaluate", None)
    print_eval_summary(Path(summary["eval_dir"]))
    if summary["report"]:
        console.print(f"report: {summary['report']}")


def print_eval_summary(eval_dir: Path) -> None:
    from evaluation.report import METRIC_NAMES, _model_order, group_results, seed_summary

    doc = json.loads((eval_dir / "metrics.json").read_text())
    for t in doc["tasks"]:
        metric = t["primary_metric"]
        sp = t["splits"]["test"]
        unit = "exams" if t["level"] == "exam" else "images"
        table = Table("model", "protocol", METRIC_NAMES[metric] + " [95% CI]", "accuracy", "seeds",
                      title=f"{t['task']} on test ({t.get('test_units', sp['images'])} {unit}, {sp['patients']} "
                            "patients), 100% labels")
        groups = group_results(doc["results"], t["task"])
        for (model_name, proto), by_f in sorted(groups.items(), key=lambda kv: (_model_order(kv[0][0]), kv[0][1])):
            if 1.0 not in by_f:
                continue
            m, lo, hi, *_, n = seed_summary(by_f[1.0], metric)
            acc = seed_summary(by_f[1.0], "accuracy")[0]
            value = f"{m:.3f} [{lo:.3f}, {hi:.3f}]" if m == m else "undefined"
            table.add_row(model_name, proto, value, f"{acc:.3f}", str(n))
        console.print(table)
        for note in t.get("notes", []):
            console.print(f"[yellow]{t['task']}: {note}[/yellow]")
        if sum(c > 0 for c in t.get("test_classes", [1, 1])) < 2:
            console.print(f"[yellow]{t['task']}: the test part holds a single class; "
                          f"{METRIC_NAMES[metric]} is undefined there[/yellow]")


@app.command()
def report(eval_dir: Path = typer.Argument(..., help="workspace/evals/<eval_id>")) -> None:
    """Render an evaluation's report: report.html (self-contained), PNG plots beside it."""
    from evaluation.report import write_report

    if not (eval_dir / "metrics.json").is_file():
        _fail(f"{eval_dir} holds no metrics.json: give an evaluation folder (workspace/evals/<eval_id>)")
    print_eval_summary(eval_dir)
    console.print(f"report: {write_report(eval_dir)}")


# --- the whole pipeline ----------------------------------------------------------------------

@app.command()
def pipeline(
    pipeline_file: Path = typer.Argument(..., help="Pipeline YAML (e.g. configs/pipelines/demo.yaml)"),
    workspace: WorkspaceOpt = None,
) -> None:
    """Run every stage of a pipeline file as one Prefect flow, skipping what is up to date."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from flows.pipeline import Pipeline, PipelineError, pipeline_flow

    try:
        spec = Pipeline.load(pipeline_file)
    except PipelineError as e:
        _fail(str(e))
    ws = _ws(workspace or (Path(spec.workspace) if spec.workspace else None))
    log_path = _setup_logging(ws, "pipeline")
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True) as bar:
        jobs: dict[str, int] = {}

        def update(name: str, done, total) -> None:
            if name not in jobs:
                jobs[name] = bar.add_task(name, total=None)
            bar.update(jobs[name], completed=done, total=total)

        progress_hooks.hooks["ingest"] = lambda result, s: update(f"ingest {s.source}", s.result.files,
                                                                   s.files_seen - s.files_skipped)
        progress_hooks.hooks["curate"] = lambda stage, done, total: update("curate", done, total)
        progress_hooks.hooks["evaluate"] = lambda done, total, label: update("evaluate", done, total)
        try:
            results = pipeline_flow(str(ws.root), str(pipeline_file))
        except (PipelineError, WorkspaceBusy) as e:
            _fail(str(e))
        except ScrubbedError as e:
            _fail(str(e), code=1)
        finally:
            for name in ("ingest", "curate", "evaluate"):
                progress_hooks.hooks.pop(name, None)
    colour = {"done": "green", "up to date": "cyan", "failed": "red", "blocked": "yellow"}
    t = Table("stage", "status", "detail", title=f"pipeline {pipeline_file.name} on {ws.root}")
    for r in results:
        c = colour.get(r["status"], "white")
        t.add_row(r["stage"], f"[{c}]{r['status']}[/{c}]", r["detail"])
    console.print(t)
    curated = next((r.get("summary") for r in results if r["stage"] == "curate" and r.get("summary")), None)
    if curated:
        print_curate_summary(curated)
    report_path = next((r.get("report") for r in results if r["stage"] == "evaluate" and r["status"] != "failed"), None)
    if report_path and Path(report_path).is_file():
        print_eval_summary(Path(report_path).parent)
        console.print(f"report: {report_path}")
    if any(r["status"] in ("failed", "blocked") for r in results):
        err.print(f"[red]some stages failed[/red]: details in {ws.logs_dir / 'pipeline-errors.log'} and {log_path}")
        raise typer.Exit(1)


@app.command()
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

    from flows.pipeline import STAGES, Pipeline, PipelineError, pipeline_flow

    try:
        spec = Pipeline.load(pipeline_file)
    except PipelineError as e:
        _fail(str(e))
    chosen = list(STAGES) if stages == "all" else _csv([stages])
    bad = [s for s in chosen if s not in STAGES]
    if bad:
        _fail(f"unknown stage {bad[0]!r}: choose from {', '.join(STAGES)}")
    from prefect.client.schemas.schedules import CronSchedule

    try:
        CronSchedule(cron=cron, timezone=timezone)  # validates the expression now, not at the first run
    except Exception as e:
        why = e.errors()[0]["msg"] if hasattr(e, "errors") else str(e).splitlines()[0]
        _fail(f"bad schedule {cron!r} ({timezone}): {why[:120]}")
    schedule = Cron(cron, timezone=timezone)
    ws = _ws(workspace or (Path(spec.workspace) if spec.workspace else None))
    params = {"workspace": str(ws.root), "pipeline_file": str(pipeline_file.absolute()), "show_progress": False,
              "stages": chosen}
    deployment_name = name or pipeline_file.stem
    if dry_run:
        import datetime as dt
        from zoneinfo import ZoneInfo

        t = Table("", "", title=f"deployment pipeline/{deployment_name}")
        t.add_row("stages", ", ".join(chosen))
        t.add_row("schedule", f"{cron} ({timezone})")
        try:
            from prefect._vendor.croniter import croniter  # what Prefect's scheduler itself uses

            it = croniter(cron, dt.datetime.now(ZoneInfo(timezone)))
            t.add_row("next runs", ", ".join(it.get_next(dt.datetime).isoformat(timespec="minutes")
                                             for _ in range(3)))
        except ImportError:
            pass
        t.add_row("workspace", str(ws.root))
        console.print(t)
        return
    _setup_logging(ws, "serve")
    pipeline_flow.serve(name=deployment_name, schedule=schedule, parameters=params)


@app.command()
def demo(
    pipeline_file: Path = typer.Option(Path(__file__).resolve().parents[1] / "configs" / "pipelines" / "demo.yaml",
                                       "--pipeline", help="The bundled demo pipeline file"),
    workspace: WorkspaceOpt = None,
) -> None:
    """The main job end to end on the embedded default data: `ortho pipeline` on the bundled demo file
    (the phantom source, pydicom's real files, ingest, curate, shards, pretraining, evaluation)."""
    ws = _ws(workspace)
    pipeline(pipeline_file=pipeline_file, workspace=ws.root)
    console.print("\nTry: [bold]ortho status[/bold]"
                  "\n     [bold]ortho sql \"SELECT modality, body_part, count(*) FROM images GROUP BY ALL\"[/bold]"
                  f"\n     [bold]ortho shards verify {ws.root}/shards/demo-knee/manifest.json[/bold]"
                  "\n     [bold]ortho sql \"SELECT run_id, kind, status, params FROM runs WHERE kind = 'pretrain'\"[/bold]"
                  "\n     [bold]ortho sql \"SELECT task, transfer, model, protocol, fraction, qwk, auroc FROM evals\"[/bold]")


if __name__ == "__main__":
    app()
