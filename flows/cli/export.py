"""`ortho export dicom`."""

from __future__ import annotations

from pathlib import Path

import typer

from curation.export_dicom import ExportOptions
from flows.cli.common import WorkspaceOpt, console, fail, open_workspace, setting


def export_dicom(
    query: str = typer.Option(..., "--query", help="SQL returning image_id; their DICOM files are exported"),
    out: Path = typer.Option(..., "--out", help="Output folder (patient pseudonym / study / file id .dcm)"),
    modified_dates: bool = setting(ExportOptions, "retain_modified_dates",
                                   help="Retain Longitudinal Temporal Information with Modified Dates"),
    retain_patient_characteristics: bool = setting(ExportOptions, "retain_patient_characteristics",
                                                   help="Keep sex, age, size and weight"),
    allow_burned_in: bool = setting(ExportOptions, "allow_burned_in",
                                    help="Also export unscreened objects that declare burned-in annotation"),
    workspace: WorkspaceOpt = None,
) -> None:
    """De-identified DICOM per PS3.15 Annex E (Basic Profile, safe-attribute allow-list, keyed UIDs)."""
    import duckdb

    from curation.export_dicom import export_selection

    ws = open_workspace(workspace)
    try:
        result = export_selection(ws, query, out, ExportOptions(modified_dates, retain_patient_characteristics,
                                                                  allow_burned_in))
    except duckdb.Error as e:
        fail(f"query failed: {str(e).splitlines()[0]}")
    console.print(f"exported {len(result.written)} DICOM files to {out}")
    for reason, n in result.skipped.items():
        console.print(f"skipped {n}: {reason}")
