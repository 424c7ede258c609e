"""Writing the phantom tree: every patient's exams into pacs/ and public/, the broken files and
labels.csv, drawn in a uniquely named temporary folder that is renamed into place when complete.

The order of the draws from the shared generator is part of the output: per patient the study UID,
then each knee (grade, pixels, DICOM UIDs, public-only pixels), then the MRI, then (patient 0) the
extra objects; the random broken file last. Hips and poses draw from generators of their own, so
that turning them on or off leaves every other pixel as it was."""

from __future__ import annotations

import csv
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from catalog.errors import OrthoError
from catalog.ids import token
from flows.phantom.broken import broken_files
from flows.phantom.burned_text import burn_identity, has_burned_text
from flows.phantom.dicom import (
    mri_slices,
    multiframe_mri,
    radiograph_dicom,
    structured_report,
)
from flows.phantom.dicom_identity import new_uid
from flows.phantom.mri import draw_mri, nifti_gz
from flows.phantom.patients import DEFAULT_PATIENTS, MAX_PATIENTS, PhantomPatient, patients
from flows.phantom.public import png_bytes, public_knee
from flows.phantom.radiographs import draw_hip, draw_radiograph

MARKER = ".phantom-v1-complete"


@dataclass(frozen=True)
class _Drawing:
    """One drawing of the tree: the folders it writes, the shared generator and the options."""

    pacs: Path
    public: Path
    rng: np.random.Generator
    seed: int
    n_patients: int
    hips: bool
    poses: bool


@dataclass(frozen=True)
class PhantomSpec:
    """The tree to draw: a pipeline file's `phantom:` section; `write_phantom` takes the same defaults."""

    root: str = "demo-data/phantom"
    patients: int | None = None  # None: keep an existing tree of any size (6 patients when none exists)
    seed: int = 0
    hips: bool = False  # add graded hip radiographs (task hip_kl_grade)
    poses: bool = True  # position and expose each knee radiograph differently


def write_phantom(root: Path, seed: int = PhantomSpec.seed, n_patients: int | None = PhantomSpec.patients,
                  hips: bool = PhantomSpec.hips, poses: bool = PhantomSpec.poses) -> Path:
    """Write the tree once (atomically: a temporary folder renamed into place). With n_patients=None
    an existing tree of any size is kept (6 patients when none exists); a tree drawn with another
    seed, size or anatomy than asked is drawn again. `hips` adds a second anatomy: one graded hip
    radiograph per patient (task `hip_kl_grade`), for cross-anatomy evaluation. `poses` positions and
    exposes every knee radiograph differently (see draw_radiograph), as real ones are."""
    root = Path(root)
    stamp = f"phantom v3 seed={seed} patients={n_patients or DEFAULT_PATIENTS}{' hips' if hips else ''}{' poses' if poses else ''}\n"
    if (root / MARKER).exists() and (n_patients is None or (root / MARKER).read_text() == stamp):
        return root
    n_patients = n_patients or DEFAULT_PATIENTS
    if n_patients > MAX_PATIENTS:
        raise OrthoError(f"the phantom draws at most {MAX_PATIENTS} distinct patients")
    tmp = root.with_name(f".{root.name}.tmp-{token()}")
    _draw_tree(_Drawing(tmp / "pacs", tmp / "public", np.random.default_rng(seed), seed, n_patients, hips, poses))
    (tmp / MARKER).write_text(stamp)
    _publish(tmp, root)
    return root


def _publish(tmp: Path, root: Path) -> None:
    """The complete tree at tmp becomes root, in one rename."""
    if root.exists():
        shutil.rmtree(root)  # an incomplete earlier attempt
    root.parent.mkdir(parents=True, exist_ok=True)
    os.rename(tmp, root)


def _draw_tree(d: _Drawing) -> None:
    people = patients(d.n_patients, d.seed)
    label_rows = []
    for p in people:
        label_rows += _write_patient(d, p)
    good = next(iter(sorted((d.pacs / people[0].folder).rglob("*.dcm"))))
    for name, data in broken_files(good.read_bytes(), d.rng).items():
        _write(d.pacs / "broken" / name, data)
    with open(d.pacs / "labels.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["file", "kl_grade", "mri_acl"] + (["hip_kl_grade"] if d.hips else []))
        writer.writeheader()
        writer.writerows(label_rows)


def _write_patient(d: _Drawing, p: PhantomPatient) -> list[dict]:
    """One patient's study (both knees, the hip if asked, the MRI); their labels.csv rows."""
    study_uid = new_uid(d.rng)
    study = d.pacs / p.folder / f"{p.study_date}_KNEE"
    rows = [_write_knee(d, p, side, study, study_uid) for side in ("L", "R")]
    if d.hips:
        rows.append(_write_hip(d, p, study, study_uid))
    acl = bool(d.rng.integers(0, 2))
    rows.append(_write_mri(d, p, acl, study, study_uid))
    if p.index == 0:
        _write_extras(d, p, acl, study, study_uid)
    return rows


def _write_knee(d: _Drawing, p: PhantomPatient, side: str, study: Path, study_uid: str) -> dict:
    """The knee radiograph in pacs/ (identity burned in for some patients) and its public copy."""
    grade = int(d.rng.integers(0, 5))
    pose = np.random.default_rng([d.seed, p.index, 2, side == "L"]) if d.poses else None
    arr = draw_radiograph(grade, side, d.rng, pose=pose)
    stem = f"{p.family}_{p.given[0]}_knee_{side}"
    mono1 = p.index == 1 and side == "R"
    shown = burn_identity(arr, p, side) if has_burned_text(p) else arr
    _write(study / "XR" / f"{stem}.dcm", radiograph_dicom(p, shown, side, d.rng, study_uid, monochrome1=mono1))
    split = "val" if p.index >= d.n_patients - 2 else "train"
    public = public_knee(p, side, grade, arr, d.rng, d.seed, d.poses)
    _write(d.public / split / str(grade) / f"{90000 + p.index}{side}.png", png_bytes(public))
    return {"file": stem, "kl_grade": grade, "mri_acl": ""}


def _write_hip(d: _Drawing, p: PhantomPatient, study: Path, study_uid: str) -> dict:
    """One graded hip radiograph, drawn from a generator of its own (the knee draws stay as without hips)."""
    hip_rng = np.random.default_rng([d.seed, p.index, 1])
    side = "L" if p.index % 2 else "R"
    grade = int(hip_rng.integers(0, 5))
    stem = f"{p.family}_{p.given[0]}_hip_{side}"
    _write(study / "HIP" / f"{stem}.dcm",
           radiograph_dicom(p, draw_hip(grade, side, hip_rng), side, hip_rng, study_uid, body_part="HIP"))
    return {"file": stem, "kl_grade": "", "mri_acl": "", "hip_kl_grade": grade}


def _write_mri(d: _Drawing, p: PhantomPatient, acl: bool, study: Path, study_uid: str) -> dict:
    """The knee MRI as a DICOM slice series and as a NIfTI volume."""
    vol = draw_mri(acl, d.rng)
    for k, data in enumerate(mri_slices(p, vol, d.rng, study_uid)):
        _write(study / "MR_SAG_PD_FS" / f"IM{k + 1:04d}.dcm", data)
    exam = f"{p.family}_{p.given[0]}_mri"
    _write(d.pacs / "nifti" / f"{exam}.nii.gz", nifti_gz(vol.astype(np.int16)))
    return {"file": exam, "kl_grade": "", "mri_acl": int(acl)}


def _write_extras(d: _Drawing, p: PhantomPatient, acl: bool, study: Path, study_uid: str) -> None:
    """Patient 0 only: a multi-frame MR object, a structured report and a re-export of the radiographs."""
    _write(study / "MR_COR_T1" / "multiframe.dcm", multiframe_mri(p, draw_mri(acl, d.rng), d.rng, study_uid))
    _write(study / "SR" / "report.dcm", structured_report(p, d.rng, study_uid))
    # A re-export of the same study: other file names, same pixels (exact duplicates).
    for src in sorted((study / "XR").iterdir()):
        _write(d.pacs / "reexport" / p.folder / f"copy_{src.name}", src.read_bytes())


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
