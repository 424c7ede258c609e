"""kill -9 a curation at random moments, run it again: the curated catalog equals an uninterrupted
run's (signatures, duplicate groups, quality flags, splits, leakage guard)."""

import shutil

import pytest

from catalog.workspace import Workspace
from tests.killing import run_or_kill
from tests.snapshots import curated_snapshot as snapshot

SCRIPT = """
import sys
from catalog.workspace import Workspace
from curation.run import CurateConfig, curate
curate(Workspace.open(sys.argv[1]), CurateConfig(batch_size=8))
"""

def run(ws, kill_after_signature_parts=None):
    return run_or_kill(SCRIPT, [str(ws.root)], None if kill_after_signature_parts is None else
                       lambda: len(list(ws.signatures_dir.glob("*.parquet"))) >= kill_after_signature_parts,
                       jitter_s=0.05)


@pytest.mark.slow
def test_killed_and_rerun_curation_equals_uninterrupted(tmp_path, phantom_workspace):
    src, _ = phantom_workspace
    reference = Workspace.open(tmp_path / "ref")
    shutil.copytree(src.root, reference.root, dirs_exist_ok=True)
    victim = Workspace.open(tmp_path / "victim")
    shutil.copytree(src.root, victim.root, dirs_exist_ok=True)
    run(reference)
    expected = snapshot(reference)
    assert len(expected["signatures"]) > 20 and expected["splits"]

    kills = 0
    for parts in (1, 3, 6):
        if run(victim, kill_after_signature_parts=parts):
            break
        kills += 1
    run(victim)
    assert kills >= 1
    assert snapshot(victim) == expected
    assert not any(victim.staging_dir.iterdir()) and not list(victim.root.rglob("*.tmp"))
