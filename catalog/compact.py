"""Compaction: many small catalog parts (one per ingest batch) merged into one.

Runs after an ingest that leaves more than ORTHO_COMPACT_PARTS (default 256) batch parts, and on
demand with `ortho catalog compact`.

Why: DuckDB reads the footer of every Parquet file a view names, so memory and query start-up
grow with the number of parts (measured: ~0.25 MB per part, 400 parts -> +100 MB), not with the
number of images. Compaction keeps only the current version of each file and publishes the
merged part before deleting the old ones. A reader in between sees both; the views already pick
one row per (source, file_id), and the merged part's id sorts after every batch part's, so the
result is the same catalog. Lineage files are merged the same way.
"""

from __future__ import annotations

import os
import shutil

from catalog import db
from catalog.publish import publish
from catalog.ids import new_run_id, token
from catalog.workspace import Workspace

MERGED_PREFIX = "~compact-"  # "~" sorts after the digits that start every batch part id


def compact(ws: Workspace, wait_s: float = 0.0) -> tuple[int, int]:
    """Merge the batch parts (not earlier merged ones: the cost stays linear) into one part.
    Returns (parts before, parts after)."""
    with ws.write_lock(wait_s):
        everything = sorted(p for p in ws.parts_dir.iterdir() if p.is_dir())
        parts = [p for p in everything if not p.name.startswith(MERGED_PREFIX)]
        if len(parts) < 2:
            return len(everything), len(everything)
        new_id = MERGED_PREFIX + new_run_id()
        staging = ws.staging_dir / f"compact-{token()}"
        staging.mkdir(parents=True)
        with db.connection(ws) as con:
            occ = f"read_parquet('{db.sql_str(ws.parts_dir / '*' / 'occurrences.parquet')}', union_by_name=true)"
            lab = db._parts_source(con, ws, "labels", "LABEL")
            batch = "(" + ", ".join(f"'{p.name}'" for p in parts) + ")"
            queries = {
                "files": f"SELECT * REPLACE ('{{id}}' AS part_id) FROM current_files WHERE part_id IN {batch}",
                "occurrences": f"""SELECT o.* REPLACE ('{{id}}' AS part_id) FROM {occ} o
                                   SEMI JOIN current_files f ON o.part_id = f.part_id AND o.file_id = f.file_id
                                   WHERE o.part_id IN {batch}""",
                "labels": f"""SELECT l.* REPLACE ('{{id}}' AS part_id) FROM {lab} l
                              SEMI JOIN current_files f ON l.part_id = f.part_id AND l.file_id = f.file_id
                              WHERE l.part_id IN {batch}""",
            }
            for name, sql in queries.items():
                target = db.sql_str(staging / f"{name}.parquet")
                con.execute(f"COPY ({sql.format(id=new_id)}) TO '{target}' (FORMAT parquet, COMPRESSION zstd)")
            lineage = sorted(ws.lineage_dir.glob("*.parquet"))
            if len(lineage) > 1:
                con.execute(f"""COPY (SELECT DISTINCT * FROM read_parquet('{db.sql_str(ws.lineage_dir / '*.parquet')}',
                                union_by_name=true)) TO '{db.sql_str(staging / 'lineage.parquet')}' (FORMAT parquet)""")
        merged_lineage = staging / "lineage.parquet"
        if merged_lineage.exists():
            os.replace(merged_lineage, ws.lineage_dir / f"{new_id}.parquet")
            for old in lineage:
                old.unlink(missing_ok=True)
        os.rename(staging, ws.parts_dir / new_id)
        for old in parts:
            shutil.rmtree(old, ignore_errors=True)
        publish(ws)
        return len(everything), len(everything) - len(parts) + 1
