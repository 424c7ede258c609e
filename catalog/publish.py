"""Publishing a committed change (an ingest, a curation, a compaction; the caller holds the write lock): the
current state materialised once as a snapshot (catalog/current.py says when a connection may use it), and
catalog.duckdb rewritten to point at it."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import duckdb

from catalog import db
from catalog.current import TABLES, current_dir, fingerprint
from catalog.files import atomic_write, fsync_dir
from catalog.ids import new_run_id
from catalog.workspace import Workspace

log = logging.getLogger("ortho.catalog")

ROW_GROUP = 100_000
MEMORY = "1GB"  # the derivation of `images` at 1.2M images needs about 1.1 GB; a query's 256MB is not enough
_KEEP = 2  # the published snapshot and the one before it (a reader may still be on it)


def publish(ws: Workspace) -> None:
    """After a committed change (the caller holds the write lock): the current state materialised once, and
    catalog.duckdb pointing at it. A materialisation that fails (out of memory, a full disk) leaves the catalog
    exact: queries derive the current state until the next change publishes; it is logged, never raised."""
    try:
        materialise(ws)
    except (duckdb.Error, OSError) as e:
        log.warning("the current state could not be materialised (%s); queries derive it until the next change",
                    type(e).__name__)
    db.write_duckdb_file(ws)


def materialise(ws: Workspace) -> Path:
    """Derive and publish a snapshot of the current state (the caller holds the workspace's write lock)."""
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
