"""The catalog's current state, materialised: `images`, `files` and `labels` written once per change as Parquet.

The views in db.py derive current versions, canonical occurrences and slice order with window functions over
every part; at 1.2M images that costs over a second a query. After each committed ingest, curation or compaction,
`materialise` runs that derivation once and writes its three results to catalog/current/<snapshot_id>/, sorted
so that the usual filters (source, modality, body part, split, patient) prune row groups, then publishes it by
rewriting catalog/current/CURRENT.json in one rename.

A snapshot records the fingerprint of the inputs it was derived from (the names of the committed parts, the
current curation run, the split files). A connection uses it only while the fingerprint still matches, and
derives the views as before otherwise, so a commit that was killed before its snapshot was written can never
show a stale catalog: the worst a kill costs is the speed, until the next change publishes a new snapshot.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from catalog.files import atomic_write, fsync_dir
from catalog.ids import new_run_id
from catalog.workspace import Workspace

VERSION = 1  # of the derivation: a change of the views' SQL changes it, and old snapshots stop matching
TABLES = {  # table -> sort order (what queries filter on first)
    "images": "source, modality, body_part, split, patient_key, image_id",
    "files": "source, status, file_id",
    "labels": "task, source, image_id",
}
ROW_GROUP = 100_000
MEMORY = "1GB"  # the derivation of `images` at 1.2M images needs about 1.1 GB; a query's 256MB is not enough
_KEEP = 2  # the published snapshot and the one before it (a reader may still be on it)


def current_dir(ws: Workspace) -> Path:
    return ws.current_dir


def fingerprint(ws: Workspace) -> str:
    """What the three tables are derived from, by name: parts and curation runs are immutable once committed."""
    h = hashlib.sha256(f"v{VERSION}".encode())
    for folder in (ws.parts_dir, ws.splits_dir):
        names = sorted(os.listdir(folder)) if folder.is_dir() else []
        h.update(f"\0{folder.name}:{','.join(names)}".encode())
    runs = sorted(p.name for p in ws.curation_dir.iterdir() if p.is_dir()) if ws.curation_dir.is_dir() else []
    h.update(f"\0curation:{runs[-1] if runs else ''}".encode())
    return h.hexdigest()


def fresh_snapshot(ws: Workspace) -> Path | None:
    """The published snapshot's folder, if it was derived from the catalog as it is now."""
    pointer = current_dir(ws) / "CURRENT.json"
    try:
        published = json.loads(pointer.read_text())
    except (OSError, ValueError):
        return None
    folder = current_dir(ws) / str(published.get("snapshot"))
    if published.get("fingerprint") != fingerprint(ws) or not all((folder / f"{t}.parquet").is_file() for t in TABLES):
        return None
    return folder


def materialise(ws: Workspace) -> Path:
    """Derive and publish a snapshot of the current state (the caller holds the workspace's write lock)."""
    from catalog import db

    fp = fingerprint(ws)
    snapshot_id = new_run_id()
    staging = ws.staging_dir / f"current-{snapshot_id}"
    staging.mkdir(parents=True)
    with db.connection(ws, derived=True, views=TABLES) as con:
        con.execute(f"SET memory_limit = '{MEMORY}'")  # spills past it; measured by bench/catalog.py
        for table, order in TABLES.items():
            target = db.sql_str(staging / f"{table}.parquet")
            con.execute(f"COPY (SELECT * FROM {table} ORDER BY {order}) TO '{target}' "
                        f"(FORMAT parquet, ROW_GROUP_SIZE {ROW_GROUP})")
    folder = current_dir(ws) / snapshot_id
    folder.parent.mkdir(exist_ok=True)
    os.rename(staging, folder)
    fsync_dir(folder.parent)
    atomic_write(current_dir(ws) / "CURRENT.json", json.dumps({"snapshot": snapshot_id, "fingerprint": fp}),
                 ws.staging_dir)
    _prune(ws)
    return folder


def _prune(ws: Workspace) -> None:
    snapshots = sorted(p for p in current_dir(ws).iterdir() if p.is_dir())
    for old in snapshots[:-_KEEP]:
        shutil.rmtree(old, ignore_errors=True)
