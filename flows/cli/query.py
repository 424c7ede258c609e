"""Reading the catalog: `ortho sql`, `ortho status`, `ortho lineage`, `ortho tasks list`."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from catalog import readonly
from catalog.status import catalog_status, file_lineage, labelled_images
from catalog.workspace import Workspace
from flows.cli import common
from flows.cli.common import WorkspaceOpt, fail, open_workspace

# rich (tables, the consoles) is imported where a command draws: `ortho sql --format csv|json` never does.

FORMATS = ("table", "csv", "json", "parquet")


def sql(
    query: str = typer.Argument(..., help="SQL over the views files, images, labels, runs"),
    fmt: str = typer.Option("table", "--format", help="table | csv | json | parquet"),
    out: Optional[Path] = typer.Option(None, "--out", help="Write to this file instead of the screen"),
    workspace: WorkspaceOpt = None,
) -> None:
    """Query the catalog with DuckDB SQL."""
    if fmt not in FORMATS:
        fail("--format must be table, csv, json or parquet")
    if fmt == "parquet" and out is None:
        fail("--format parquet needs --out FILE")
    ws = open_workspace(workspace)
    if fmt in ("csv", "parquet") and out is not None:
        readonly.copy_public_query(ws, query, out, "FORMAT csv, HEADER true" if fmt == "csv" else "FORMAT parquet")
        common.err.print(f"wrote {out}")
        return
    cols, rows = readonly.public_query(ws, query)
    if fmt == "table":
        print_rows(cols, rows, out)
        return
    text = json.dumps([dict(zip(cols, row)) for row in rows], default=str, indent=1) if fmt == "json" \
        else csv_text(cols, rows)
    if out:
        out.write_text(text)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


def print_rows(cols: list[str], rows: list[tuple], out: Optional[Path]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for c in cols:
        table.add_column(common.cell(c))
    for row in rows:
        table.add_row(*map(common.cell, row))
    if out:
        with open(out, "w") as f:
            Console(file=f, width=200).print(table)
    else:
        common.console.print(table)


def csv_text(cols: list[str], rows: list[tuple]) -> str:
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")  # an id captured in a shell must not keep a \r
    writer.writerow(cols)
    writer.writerows(rows)
    return buf.getvalue()


def status(workspace: WorkspaceOpt = None, as_json: bool = typer.Option(False, "--json")) -> None:
    """The workspace on one screen: sources, files by status, images by modality and body part, labels,
    shard sets, pretraining runs, evaluations and the latest failures."""
    data = workspace_status(open_workspace(workspace))
    if as_json:
        print(json.dumps(data, indent=2, default=str))
        return
    print_status(data)


def workspace_status(ws: Workspace) -> dict:
    from ingest.sources import load_sources
    from shards.writer import list_shard_sets

    facts = catalog_status(ws)
    sources = sorted(load_sources(ws).values(), key=lambda s: s.seq)
    shard_sets = [{"name": m.name, "samples": m.samples, "shards": len(m.shards), "bytes": m.bytes,
                   "created": m.created, "evaluation": m.evaluation} for m in list_shard_sets(ws)]
    head = ("files", "images", "quarantine_reasons", "labels", "patients_by_split")
    pulls = {s.name: pull for s in sources if (pull := s.location_kind.pull_summary(ws)) is not None}
    return {"workspace": str(ws.root), "sources": [{"name": s.name, "kind": s.kind} for s in sources],
            "pacs_pulls": pulls,
            **{k: facts[k] for k in head}, "shard_sets": shard_sets,
            **{k: v for k, v in facts.items() if k not in head}}


def _table(title: str, columns: list[str], rows: list[list]) -> None:
    from rich.table import Table

    if rows:
        t = Table(*columns, title=common.cell(title))
        for row in rows:
            t.add_row(*map(common.cell, row))
        common.console.print(t)


def print_status(data: dict) -> None:
    by_source: dict[str, dict[str, int]] = {}
    for f in data["files"]:
        by_source.setdefault(f["source"], {})[f["status"]] = f["count"]
    _table(f"workspace {data['workspace']}", ["source", "kind", "ingested", "duplicate", "quarantined"],
           [[s["name"], s["kind"], *(by_source.get(s["name"], {}).get(k, 0) for k in
                                     ("ingested", "duplicate", "quarantined"))] for s in data["sources"]])
    _table("PACS pulls", ["source", "studies complete", "studies failed (retried next run)", "instances",
                          "last pull (UTC)", "new studies then", "stopped"],
           [[name, p["studies_complete"], p["studies_failed"], p["instances"], p["last_pull"] or "never",
             p["last_new_studies"], p["last_stopped"] or ""] for name, p in data["pacs_pulls"].items()])
    _table("images", ["modality", "body part", "images", "excluded"],
           [[i["modality"], i["body_part"], i["count"], i["excluded"]] for i in data["images"]])
    _table("labels", ["task", "labelled images"], [[k, v] for k, v in data["labels"].items()])
    _table("patients by split", ["split", "patients"], [[k, v] for k, v in data["patients_by_split"].items()])
    _table("quarantined", ["reason", "files"], [[k, v] for k, v in data["quarantine_reasons"].items()])
    _table("images a stage excluded as unreadable", ["stage", "reason", "images"],
           [[u["stage"], u["reason"], u["images"]] for u in data["unreadable_images"]])
    _table("shard sets", ["name", "samples", "shards", "MB", "created"],
           [[m["name"] + (" (evaluation)" if m["evaluation"] else ""), m["samples"], m["shards"],
             f"{m['bytes'] / 1e6:.1f}", m["created"]] for m in data["shard_sets"]])
    _table("recent ingest and curation runs", ["run", "kind", "source", "status", "files", "images"],
           [[r["run_id"], r["kind"], r["source"], r["status"], r["files"], r["images"]] for r in data["recent_runs"]])
    _table("pretraining runs", ["run", "shard set", "status", "steps", "loss"],
           [[r["run_id"], r["shard_set"], r["status"], r["steps"],
             f"{r['loss']:.3f}" if isinstance(r["loss"], (int, float)) else ""] for r in data["pretraining_runs"]])
    _table("evaluations", ["eval", "tasks", "results", "recorded"],
           [[e["eval_id"], e["tasks"], e["results"], e["recorded"]] for e in data["evaluations"]])
    fail_ = data["last_failures"]
    _table("latest quarantined files (ortho lineage FILE_ID tells where from)", ["file id", "source", "reason"],
           [[f["file_id"], f["source"], f["reason"]] for f in fail_["files"]])
    _table("failed runs", ["run", "kind", "at"], [[r["run_id"], r["kind"], r["at"]] for r in fail_["runs"]])


def lineage(file_id: str, workspace: WorkspaceOpt = None) -> None:
    """Look up where a file id came from (the private lineage table; prints a path, which may be identifying)."""
    rows = file_lineage(open_workspace(workspace), file_id)
    if not rows:
        fail(f"no file with id {file_id}")
    for source, location, path, size, run_id in rows:
        print_plain(f"{file_id}  source={source}  path={os.path.join(location, path)}  bytes={size}  run={run_id}")


def print_plain(line: str) -> None:
    """Not through rich (a path is not markup); what the terminal's encoding lacks is escaped, never a crash."""
    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
    sys.stdout.write(line.encode(encoding, "backslashreplace").decode(encoding) + "\n")


def tasks_list(workspace: WorkspaceOpt = None, as_json: bool = typer.Option(False, "--json")) -> None:
    """Tasks with their type, anatomy and modality, and labelled images per split and class."""
    from rich.table import Table

    from catalog.tasks import describe

    counts = labelled_images(open_workspace(workspace))
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
    common.console.print(table if counts else "no labels in the catalog yet")
