"""kill -9 an ingest at random moments, start it again: the catalog equals an uninterrupted run's."""

import os
import shutil

import pytest

from catalog import db
from catalog.workspace import Workspace
from ingest.sources import Source, add_source
from tests.killing import run_or_kill
from tests.snapshots import ingested_snapshot as snapshot

SCRIPT = """
import sys
from catalog import db
from catalog.workspace import Workspace
from ingest.run import ingest_source
ingest_source(Workspace.open(sys.argv[1]), "pacs", batch_size=4)
"""

def make_ws(path, phantom_root, secret_from=None):
    ws = Workspace.open(path)
    if secret_from is not None:
        shutil.copy(secret_from.secret_path, ws.secret_path)
    add_source(ws, Source("pacs", str(phantom_root / "pacs"), "internal", labels=["csv:labels.csv"]))
    return ws


def run(ws, kill_at_parts=None):
    """Run to the end, or SIGKILL once `kill_at_parts` parts exist (plus a random few ms)."""
    return run_or_kill(SCRIPT, [str(ws.root)], None if kill_at_parts is None else
                       lambda: len(os.listdir(ws.parts_dir)) >= kill_at_parts)


@pytest.mark.slow
def test_killed_and_rerun_ingest_equals_uninterrupted(tmp_path, phantom_root):
    reference = make_ws(tmp_path / "ref", phantom_root)
    reference.secret()
    run(reference)
    expected = snapshot(reference)

    victim = make_ws(tmp_path / "victim", phantom_root, secret_from=reference)
    kills = 0
    for parts in (3, 8, 14, 20):  # of 25 parts: kills land inside batches, renames and run records
        if run(victim, kill_at_parts=parts):
            break
        kills += 1
    run(victim)
    assert kills >= 1
    assert snapshot(victim) == expected
    assert db.query(victim, "SELECT count(*) FROM runs WHERE status = 'running'")[1][0][0] == kills
    assert not any(victim.staging_dir.iterdir()) and not list(victim.root.rglob("*.tmp"))
    assert not victim.batches_dir.exists() or not any(victim.batches_dir.iterdir())
    pngs = list(victim.store_dir.rglob("*.png"))
    assert all(p.stat().st_size > 0 for p in pngs) and not list(victim.store_dir.rglob("*.tmp"))


BUILD = """
import sys
from catalog import db
from catalog.workspace import Workspace
from shards.spec import ShardSetSpec
from shards.writer import build_shard_set
build_shard_set(Workspace.open(sys.argv[1]), ShardSetSpec("killed", "SELECT image_id FROM images", samples_per_shard=2))
"""


@pytest.mark.slow
def test_killed_shard_build_leaves_nothing_and_rebuilds_identically(tmp_path, phantom_workspace):
    from shards.spec import ShardSetSpec
    from shards.writer import build_shard_set, list_shard_sets

    src, _ = phantom_workspace
    ws = Workspace.open(tmp_path / "ws")
    shutil.copytree(src.root, ws.root, dirs_exist_ok=True, ignore=shutil.ignore_patterns("shards"))
    shards = ws.root / "shards"
    finished = run_or_kill(BUILD, [str(ws.root)], jitter_s=0.0, kill_when=lambda: shards.exists() and any(
        p.glob("shard-*.tar") for p in shards.iterdir()))
    assert not finished and list_shard_sets(ws) == [] and not (shards / "killed").exists()
    _, m1, built = build_shard_set(ws, ShardSetSpec("killed", "SELECT image_id FROM images", samples_per_shard=2))
    _, m2, _ = build_shard_set(ws, ShardSetSpec("again", "SELECT image_id FROM images", samples_per_shard=2))
    assert built and [s.sha256 for s in m1.shards] == [s.sha256 for s in m2.shards]
    assert sorted(p.name for p in shards.iterdir()) == ["again", "killed"]  # the killed build's leftovers are gone
