"""kill -9 a curation at random moments, run it again: the curated catalog equals an uninterrupted
run's (signatures, duplicate groups, quality flags, splits, leakage guard)."""

import shutil

import pytest

from catalog import db
from catalog.workspace import Workspace
from tests.killing import run_or_kill

SCRIPT = """
import sys
from catalog.workspace import Workspace
from curation.run import CurateConfig, curate
curate(Workspace.open(sys.argv[1]), CurateConfig(batch_size=8))
"""

VIEWS = {
    "signatures": "SELECT * EXCLUDE (run_id) FROM signatures ORDER BY image_id",
    "dup_groups": "SELECT * EXCLUDE (run_id) FROM dup_groups ORDER BY ALL",
    "quality": "SELECT * EXCLUDE (run_id) FROM quality ORDER BY ALL",
    "splits": "SELECT * EXCLUDE (run_id) FROM splits ORDER BY ALL",
    "leakage": "SELECT * EXCLUDE (run_id) FROM leakage ORDER BY ALL",
    "images": "SELECT image_id, split, dup_group, dup_representative, excluded, held_out FROM images ORDER BY ALL",
}


def snapshot(ws):
    out = {}
    for name, sql in VIEWS.items():
        if "run_id" not in db.query(ws, f"SELECT * FROM {name} LIMIT 0")[0]:
            sql = sql.replace(" EXCLUDE (run_id)", "")
        out[name] = db.query(ws, sql)[1]
    return out


def run(ws, kill_after_signature_parts=None):
    return run_or_kill(SCRIPT, [str(ws.root)], None if kill_after_signature_parts is None else
                       lambda: len(list(ws.signatures_dir.glob("*.parquet"))) >= kill_after_signature_parts,
                       jitter_s=0.05)


@pytest.mark.slow
@pytest.mark.reliability
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
