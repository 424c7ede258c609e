"""Ingest and curate started together on one workspace: the second writer either waits its turn
(--wait) or stops with a clear message; the catalog ends as a serial ingest-then-curate leaves it."""

import os
import shutil
import subprocess
import sys
import time

import pytest

from catalog.workspace import Workspace
from ingest.sources import Source, add_source
from tests.killing import CHILD_PREAMBLE
from tests.snapshots import curated_snapshot as snapshot

INGEST = """
import sys
from catalog.workspace import Workspace
from ingest.run import ingest_source
ingest_source(Workspace.open(sys.argv[1]), "pacs", batch_size=4)
"""
CURATE = """
import sys
from catalog.workspace import Workspace, WorkspaceBusy
from curation.run import curate
try:
    curate(Workspace.open(sys.argv[1]), wait_s=float(sys.argv[2]))
except WorkspaceBusy as e:
    print(e)
    sys.exit(75)
"""


def start(script: str, *args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    return subprocess.Popen([sys.executable, "-c", CHILD_PREAMBLE + script, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_concurrent_ingest_and_curate(tmp_path):
    from curation.run import curate
    from flows.phantom import write_phantom
    from ingest.run import ingest_source

    # 24 patients: an ingest long enough (~10 s) that both curations start while it holds the lock
    phantom_root = write_phantom(tmp_path / "tree", n_patients=24)

    serial = Workspace.open(tmp_path / "serial")
    add_source(serial, Source("pacs", str(phantom_root / "pacs"), "internal", labels=["csv:labels.csv"]))
    ingest_source(serial, "pacs", batch_size=4)
    curate(serial)

    ws = Workspace.open(tmp_path / "ws")
    shutil.copy(serial.secret_path, ws.secret_path)
    add_source(ws, Source("pacs", str(phantom_root / "pacs"), "internal", labels=["csv:labels.csv"]))
    ingest = start(INGEST, str(ws.root))
    while ingest.poll() is None and not any(ws.parts_dir.iterdir()):
        time.sleep(0.005)
    assert ingest.poll() is None, "ingest finished before the test could race it"
    impatient = start(CURATE, str(ws.root), "0")
    patient = start(CURATE, str(ws.root), "300")
    out, _ = impatient.communicate(timeout=120)
    assert ingest.poll() is None or impatient.returncode == 75, "ingest ended before curation could race it"
    assert impatient.returncode == 75
    assert "is busy: another ortho process" in out and "--wait" in out and str(tmp_path) not in out
    assert ingest.wait(timeout=300) == 0
    assert patient.wait(timeout=300) == 0, patient.stderr.read()[-2000:]
    assert snapshot(ws) == snapshot(serial)
