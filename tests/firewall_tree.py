"""A source tree built to test the failure firewall: a patient-named folder, a file name that is not UTF-8, and one
PNG a patched reader fails on with a message that holds a name and a path (tests/ingest and tests/flows share it)."""

import os
from pathlib import Path

import numpy as np

from catalog import db
from catalog.workspace import Workspace
from ingest import readers
from catalog.pixels import encode_png
from ingest.sources import Source, add_source
from tests.ingest.dicom_factory import make_dicom

PATIENT_DIR = "Zorblatt_Quentin_PHX7731ZQ"
LATIN1_NAME = b"M\xfcller_knee.dcm"  # Latin-1: not valid UTF-8
UTF8_NAME = "J\u00f6rg_knee.dcm"
PLANTED = "Zorblatt PHX7731ZQ /secret/path"
NEEDLES = ["Zorblatt", "PHX7731ZQ", "Quentin", "/secret/path", "ller_knee.dcm", "rg_knee.dcm"]
BAD_WIDTH = 41  # the one PNG the raising reader fails on


def _gradient(seed: int, width: int = 32) -> np.ndarray:
    return (np.add.outer(np.arange(32), np.arange(width)) * (seed + 3) % 4096).astype(np.uint16)


def write_tree(root: Path) -> Path:
    """A patient-named folder with two DICOM files (one name Latin-1, one UTF-8) and four PNGs, one of them the
    file the raising reader fails on."""
    patient = root / PATIENT_DIR
    patient.mkdir(parents=True)
    fd = os.open(os.path.join(os.fsencode(patient), LATIN1_NAME), os.O_WRONLY | os.O_CREAT, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(make_dicom(_gradient(1)))
    (patient / UTF8_NAME).write_bytes(make_dicom(_gradient(2)))
    (root / "png").mkdir()
    for i in range(3):
        (root / "png" / f"knee{i}.png").write_bytes(encode_png(_gradient(10 + i).astype(np.uint8)))
    (root / "png" / "odd.png").write_bytes(encode_png(_gradient(20, BAD_WIDTH).astype(np.uint8)))
    return root


def raising_for_one_file(monkeypatch) -> None:
    """The PNG reader raises an unexpected exception, whose message holds a name and a path, for odd.png only."""
    real = readers.READERS["png"]

    def reader(data, ctx):
        if int.from_bytes(data[16:20], "big") == BAD_WIDTH:
            raise RuntimeError(PLANTED)
        return real(data, ctx)

    monkeypatch.setitem(readers.READERS, "png", reader)


def add_tree_source(ws: Workspace, root: Path) -> None:
    add_source(ws, Source("src", str(root), "internal", modality="DX", body_part="knee"))


def file_statuses(ws: Workspace) -> dict[str, tuple]:
    con = db.connect(ws, private=True)
    try:
        rows = con.execute("""SELECT l.path, f.status, f.reason, f.detail FROM files f
                              JOIN lineage l USING (source, file_id)""").fetchall()
    finally:
        con.close()
    return {os.path.basename(path): (status, reason, detail) for path, status, reason, detail in rows}
