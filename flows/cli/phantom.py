"""`ortho phantom`: the demo's data, a synthetic tree, written where asked."""

from __future__ import annotations

from pathlib import Path

import typer

from flows.cli.common import WorkspaceOpt, console, setting
from flows.phantom.patients import DEFAULT_PATIENTS
from flows.phantom.tree import PhantomSpec


def phantom(
    root: Path = typer.Argument(Path(PhantomSpec.root)),
    seed: int = setting(PhantomSpec, "seed", help="Seed of the drawing: the same seed draws the same tree"),
    # the tree asked, drawn again when an existing one differs (a pipeline file's None keeps any existing tree)
    patients: int = typer.Option(DEFAULT_PATIENTS, help="Patients to draw"),
    hips: bool = setting(PhantomSpec, "hips", help="Add graded hip radiographs (a second anatomy, task hip_kl_grade)"),
    poses: bool = setting(PhantomSpec, "poses", help="Position and expose each knee radiograph differently, as real "
                                                     "ones are (--no-poses: all alike)"),
    workspace: WorkspaceOpt = None,  # every command takes it; the tree lies outside any workspace
) -> None:
    """Write the synthetic phantom tree (PACS-like DICOM with planted PHI, NIfTI, PNG, broken files)."""
    from flows.phantom import write_phantom

    console.print(f"phantom tree at {write_phantom(root, seed=seed, n_patients=patients, hips=hips, poses=poses)}")
