"""`ortho sources add | list`."""

from __future__ import annotations

import json
from typing import Optional

import typer
from rich.table import Table

from flows.cli.common import WorkspaceOpt, console, fail, open_workspace, setting
from ingest.pacs.options import PacsOptions
from ingest.sources import Source


def sources_add(
    name: str,
    location: str = typer.Argument(..., help="A local folder, an fsspec URL (s3://bucket/prefix, ...), or a PACS: "
                                             "dicomweb+http(s)://host:port/dicom-web or dimse://CALLED_AE@host:port"),
    kind: str = setting(Source, "kind", help="internal | public | phantom (a synthetic tree drawn on first ingest)"),
    labels: list[str] = setting(Source, "labels", "--labels",
                                help="folder:TASK | pattern:TASK | csv:FILE[:key=COL][:prefix=P]; repeatable"),
    path_pattern: Optional[str] = setting(Source, "path_pattern",
                                          help="Regex with named groups patient, laterality, split, exam, label, "
                                               "plane, view"),
    modality: Optional[str] = setting(Source, "modality", help="Modality for files without a header (e.g. DX, MR)"),
    body_part: Optional[str] = setting(Source, "body_part", help="Body part for files without a header (e.g. knee)"),
    slice_axis: str = setting(Source, "slice_axis", help="NIfTI slicing: auto (acquisition plane), 0, 1, 2 or all"),
    burned_in: str = setting(Source, "burned_in", help="Text burned into pixels: mask it, quarantine the file, or "
                                                       "off (not screened; exports claim nothing)"),
    replace: bool = typer.Option(False, help="Change the settings of an existing source"),
    query: list[str] = setting(PacsOptions, "queries", "--query",
                               help="PACS: a study filter KEY=VALUE (ModalitiesInStudy=DX,MR; StudyDate=20190101-; "
                                    "StudyDescription=knee,hip; BodyPartExamined=KNEE); repeatable"),
    calling_ae: str = setting(PacsOptions, "calling_ae", help="DIMSE: our AE title, as the archive knows it"),
    retrieve: str = setting(PacsOptions, "retrieve",
                            help="DIMSE: get (C-GET) or move (C-MOVE to a Storage SCP on --move-port)"),
    move_port: Optional[int] = setting(PacsOptions, "move_port", help="DIMSE C-MOVE: the port our Storage SCP "
                                                                      "listens on during a pull (the archive sends "
                                                                      "to it)"),
    max_connections: int = setting(PacsOptions, "max_connections", help="PACS: at most this many connections at once"),
    hours: Optional[str] = setting(PacsOptions, "hours", help="PACS: pull only in these hours, local time (e.g. 21-07)"),
    credentials: Optional[str] = setting(Source, "credentials",
                                         help="env:NAME or file:NAME (in workspace/private/credentials) holding "
                                              "DICOMweb's user:password or 'Bearer TOKEN', or an s3:// store's "
                                              "ACCESS_KEY:SECRET_KEY (endpoint: AWS_ENDPOINT_URL)"),
    tls_ca: Optional[str] = setting(PacsOptions, "tls_ca", help="DICOMweb over https: a CA bundle, env:NAME (a path) "
                                                                "or file:NAME"),
    tls_verify: bool = setting(PacsOptions, "tls_verify", help="DICOMweb over https: verify the archive's certificate"),
    workspace: WorkspaceOpt = None,
) -> None:
    """Register a source of images: a folder, a URL, or a PACS (asked one test query first)."""
    from ingest.pacs.options import is_pacs
    from ingest.sources import add_source

    pacs = PacsOptions(list(query), calling_ae, retrieve, move_port, max_connections, hours, credentials, tls_ca,
                       tls_verify).as_dict() if is_pacs(location) else {}
    if not pacs and (query or tls_ca or move_port or hours):
        fail("--query, --move-port, --hours and --tls-ca are PACS options: the location must be "
             "dicomweb+http(s)://... or dimse://AE@host:port")
    src = add_source(open_workspace(workspace),
                     Source(name, location, kind, labels=list(labels), path_pattern=path_pattern, modality=modality,
                            body_part=body_part, slice_axis=slice_axis, burned_in=burned_in, pacs=pacs,
                            credentials=None if pacs else credentials),
                     replace=replace)
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
