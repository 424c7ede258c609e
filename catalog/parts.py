"""Append-only Parquet parts, committed atomically.

A part is a folder of Parquet files (one per table) written under private/staging and renamed
into catalog/parts/ in one `rename`: readers see all of a part or none of it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from catalog.files import atomic_path, fsync_dir
from catalog.ids import token
from catalog.workspace import Workspace


def write_table(path: Path, rows: list[dict], schema: pa.Schema, tmp_dir: Path | None = None) -> None:
    # Temporaries live in private/staging when given, so a killed run's leftovers are swept there.
    table = pa.Table.from_pylist(rows, schema=schema)
    with atomic_path(path, tmp_dir) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def commit_part(ws: Workspace, part_id: str, tables: dict[str, tuple[list[dict], pa.Schema]]) -> Path:
    """Write every table of one part, then publish the folder with a single rename."""
    final = ws.parts_dir / part_id
    if final.exists():
        return final  # idempotent: a retried task finds its work done
    staging = ws.staging_dir / f"part-{part_id}-{token()}"
    staging.mkdir(parents=True)
    try:
        for name, (rows, schema) in tables.items():
            write_table(staging / f"{name}.parquet", rows, schema)
        fsync_dir(staging)
        os.rename(staging, final)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if final.exists():  # a concurrent retry of the same part won
            return final
        raise
    fsync_dir(final.parent)
    return final
