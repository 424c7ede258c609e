"""Append-only Parquet parts, committed atomically.

A part is a folder of Parquet files (one per table) written under private/staging and renamed
into catalog/parts/ in one `rename`: readers see all of a part or none of it.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from catalog.workspace import Workspace


def _tmp_name(path: Path, tmp_dir: Path | None) -> Path:
    # Temporaries live in private/staging when given, so a killed run's leftovers are swept there.
    return (tmp_dir or path.parent) / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"


def write_table(path: Path, rows: list[dict], schema: pa.Schema, tmp_dir: Path | None = None) -> None:
    table = pa.Table.from_pylist(rows, schema=schema)
    tmp = _tmp_name(path, tmp_dir)
    pq.write_table(table, tmp, compression="zstd")
    _fsync(tmp)
    os.replace(tmp, path)


def commit_part(ws: Workspace, part_id: str, tables: dict[str, tuple[list[dict], pa.Schema]]) -> Path:
    """Write every table of one part, then publish the folder with a single rename."""
    final = ws.parts_dir / part_id
    if final.exists():
        return final  # idempotent: a retried task finds its work done
    staging = ws.staging_dir / f"part-{part_id}-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    try:
        for name, (rows, schema) in tables.items():
            write_table(staging / f"{name}.parquet", rows, schema)
        _fsync(staging)
        os.rename(staging, final)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if final.exists():  # a concurrent retry of the same part won
            return final
        raise
    _fsync(final.parent)
    return final


def write_file_atomic(path: Path, data: bytes, tmp_dir: Path | None = None) -> None:
    tmp = _tmp_name(path, tmp_dir)
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _fsync(path: Path) -> None:
    # Durability against power loss; a kill -9 alone is already covered by rename.
    if os.environ.get("ORTHO_FSYNC", "1") == "0":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
