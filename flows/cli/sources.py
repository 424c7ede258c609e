"""`ortho sources add | list`."""

from __future__ import annotations

import json
from typing import Optional

import typer
from rich.table import Table

from flows.cli.common import WorkspaceOpt, console, open_workspace


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
    from ingest.sources import Source, add_source

    src = add_source(open_workspace(workspace),
                     Source(name, location, kind, labels=list(labels), path_pattern=path_pattern, modality=modality,
                            body_part=body_part, slice_axis=slice_axis, burned_in=burned_in), replace=replace)
    console.print(f"source [bold]{src.name}[/bold] registered ({src.kind}, #{src.seq})")


def sources_list(workspace: WorkspaceOpt = None, as_json: bool = typer.Option(False, "--json")) -> None:
    """Show registered sources (locations are private: shown only here, to you)."""
    from dataclasses import asdict

    from ingest.sources import load_sources

    sources = sorted(load_sources(open_workspace(workspace)).values(), key=lambda s: s.seq)
    if as_json:
        print(json.dumps([asdict(s) for s in sources], indent=2))
        return
    table = Table("#", "name", "kind", "location", "labels", "path pattern", title="sources")
    for s in sources:
        table.add_row(str(s.seq), s.name, s.kind, s.location, ", ".join(s.labels), s.path_pattern or "")
    console.print(table)
