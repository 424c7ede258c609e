"""DuckDB views over the Parquet parts: the catalog as users query it.

The parts record facts (a file was read, it produced these images); the views derive status:
an image's canonical occurrence is the first by (source_seq, generation, file_id, frame_index),
an order that does not depend on which parallel batch finished first, so a killed and re-run
ingest gives exactly the catalog an uninterrupted one gives.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Iterator

import duckdb

from catalog import schema
from catalog.current import TABLES, fresh_snapshot, materialise
from catalog.files import atomic_path
from catalog.workspace import Workspace

log = logging.getLogger("ortho.catalog")


def _parts_source(ws: Workspace, table: str, pa_schema) -> str:
    glob = ws.parts_dir / "*" / f"{table}.parquet"
    if not any(ws.parts_dir.glob(f"*/{table}.parquet")):
        return f"({schema.empty_select(pa_schema)})"
    return f"read_parquet('{sql_str(glob)}', union_by_name=true)"


def sql_str(path: Path | str) -> str:
    """A path as a single-quoted SQL string's content."""
    return str(path).replace("'", "''")


def _glob_source(folder: Path, pattern: str, pa_schema) -> str:
    if not any(folder.glob(pattern)):
        return f"({schema.empty_select(pa_schema)})"
    return f"read_parquet('{sql_str(folder / pattern)}', union_by_name=true)"


def _curation_sources(ws: Workspace) -> dict[str, str]:
    current = max((p for p in ws.curation_dir.glob("*") if p.is_dir()), default=None, key=lambda p: p.name)
    out = {}
    for name, pa_schema in (("dups", schema.DUPS), ("quality", schema.QUALITY), ("leakage", schema.LEAKAGE)):
        out[name] = (f"read_parquet('{sql_str(current / f'{name}.parquet')}')" if current
                     else f"({schema.empty_select(pa_schema)})")
    out["signatures"] = _glob_source(ws.signatures_dir, "*.parquet", schema.SIGNATURE)
    out["keypoints"] = _glob_source(ws.keypoints_dir, "*.parquet", schema.KEYPOINTS)
    out["splits"] = _glob_source(ws.splits_dir, "*.parquet", schema.SPLIT)
    return out


def view_statements(ws: Workspace, private: bool = False, derived: bool = False) -> list[str]:
    """The CREATE VIEW statements in execution order: each view reads only views created before it. `images`,
    `files` and `labels` read the materialised snapshot while it is fresh (catalog/current.py), unless `derived`."""
    snapshot = None if derived else fresh_snapshot(ws)
    if snapshot is not None:
        current = [f"CREATE OR REPLACE VIEW {t} AS SELECT * FROM read_parquet('{sql_str(snapshot / f'{t}.parquet')}')"
                   for t in TABLES]
    else:
        current = [_images_view(), _files_view(), _labels_view(ws)]
    stmts = [*_curation_views(ws), *_file_views(ws), *current, _runs_view(ws)]
    if private:
        stmts.append(_lineage_view(ws))
    return stmts


def _curation_views(ws: Workspace) -> list[str]:
    """evals and the curation outputs (signatures, keypoints, splits, dups, quality, leakage)."""
    cur = _curation_sources(ws)
    evals_src = _glob_source(ws.evals_catalog_dir, "*.parquet", schema.EVAL)
    return [
        f"CREATE OR REPLACE VIEW evals AS SELECT * FROM {evals_src}",
        f"CREATE OR REPLACE VIEW signatures AS SELECT * FROM {cur['signatures']}",
        f"CREATE OR REPLACE VIEW keypoints AS SELECT * FROM {cur['keypoints']}",
        f"""CREATE OR REPLACE VIEW splits AS SELECT * FROM {cur['splits']}
            QUALIFY row_number() OVER (PARTITION BY patient_key ORDER BY run_id) = 1""",
        f"CREATE OR REPLACE VIEW dup_groups AS SELECT * FROM {cur['dups']}",
        f"CREATE OR REPLACE VIEW quality AS SELECT * FROM {cur['quality']}",
        f"CREATE OR REPLACE VIEW leakage AS SELECT * FROM {cur['leakage']}",
    ]


def _file_views(ws: Workspace) -> list[str]:
    """file_versions, current_files (each file's newest version) and occurrences (those of current files,
    ranked)."""
    files_src = _parts_source(ws, "files", schema.FILE_ROW)
    occ_src = _parts_source(ws, "occurrences", schema.OCCURRENCE)
    return [
        f"CREATE OR REPLACE VIEW file_versions AS SELECT * FROM {files_src}",
        """CREATE OR REPLACE VIEW current_files AS
           SELECT * FROM file_versions
           QUALIFY row_number() OVER (PARTITION BY source, file_id
                                      ORDER BY generation DESC, committed_at DESC, part_id DESC) = 1""",
        f"""CREATE OR REPLACE VIEW occurrences AS
            SELECT o.*,
                   row_number() OVER (PARTITION BY o.image_id
                                      ORDER BY o.source_seq, o.generation, o.file_id, o.frame_index) AS occurrence_rank,
                   CASE WHEN o.series_key IS NULL THEN 0
                        ELSE dense_rank() OVER (PARTITION BY o.series_key, o.volume_index
                                                ORDER BY o.slice_position NULLS LAST,
                                                         o.instance_number NULLS LAST, o.frame_index) - 1
                   END AS slice_index
            FROM {occ_src} o
            SEMI JOIN current_files f ON o.part_id = f.part_id AND o.file_id = f.file_id""",
    ]


def _images_view() -> str:
    """One row per image (its canonical occurrence), with its split, duplicate group and exclusion."""
    return """CREATE OR REPLACE VIEW images AS
           SELECT o.* EXCLUDE (occurrence_rank, part_id, generation, file_version),
                  sp.split,
                  d.dup_group,
                  coalesce(d.representative, true) AS dup_representative,
                  (NOT coalesce(d.representative, true) OR q.image_id IS NOT NULL) AS excluded,
                  (coalesce(sp.split IN ('val', 'test'), false) OR l.image_id IS NOT NULL) AS held_out
           FROM occurrences o
           LEFT JOIN splits sp ON sp.patient_key = o.patient_key
           LEFT JOIN dup_groups d ON d.image_id = o.image_id
           LEFT JOIN (SELECT DISTINCT image_id FROM quality WHERE excluding) q ON q.image_id = o.image_id
           LEFT JOIN leakage l ON l.image_id = o.image_id
           WHERE o.occurrence_rank = 1"""


def _files_view() -> str:
    """One row per current file, with its status: ingested, duplicate or quarantined."""
    return """CREATE OR REPLACE VIEW files AS
           SELECT f.source, f.file_id, f.format,
                  CASE WHEN f.outcome = 'quarantined' THEN 'quarantined'
                       WHEN coalesce(o.canonical, 0) > 0 THEN 'ingested'
                       ELSE 'duplicate' END AS status,
                  CASE WHEN f.outcome = 'quarantined' THEN f.reason
                       WHEN coalesce(o.canonical, 0) = 0 THEN 'exact_duplicate' END AS reason,
                  f.detail, f.n_images, o.canonical AS n_new_images,
                  CASE WHEN f.outcome <> 'quarantined' AND coalesce(o.canonical, 0) = 0
                       THEN o.first_duplicate END AS duplicate_of,
                  f.bytes, f.run_id, f.generation, f.committed_at
           FROM current_files f
           LEFT JOIN (SELECT source, file_id,
                             count(*) FILTER (WHERE occurrence_rank = 1) AS canonical,
                             arg_min(image_id, frame_index) AS first_duplicate
                      FROM occurrences GROUP BY ALL) o
             ON o.source = f.source AND o.file_id = f.file_id"""


def _labels_view(ws: Workspace) -> str:
    """The labels of current files, each once."""
    labels_src = _parts_source(ws, "labels", schema.LABEL)
    return f"""CREATE OR REPLACE VIEW labels AS
            SELECT DISTINCT l.image_id, l.task, l.value, l.source
            FROM {labels_src} l
            SEMI JOIN current_files f ON l.part_id = f.part_id AND l.file_id = f.file_id"""


def _runs_view(ws: Workspace) -> str:
    """One row per run: its latest recorded state."""
    if any(ws.runs_dir.glob("*.parquet")):
        runs_src = f"read_parquet('{sql_str(ws.runs_dir / '*.parquet')}', union_by_name=true)"
    else:
        runs_src = f"({schema.empty_select(schema.RUN)})"
    return f"""CREATE OR REPLACE VIEW runs AS
            SELECT run_id, kind, source, generation,
                   min(recorded_at) AS started_at,
                   max(recorded_at) FILTER (WHERE phase = 'finished') AS finished_at,
                   arg_max(status, recorded_at) AS status,
                   arg_max(files_seen, recorded_at) AS files_seen,
                   arg_max(files_processed, recorded_at) AS files_processed,
                   arg_max(files_skipped, recorded_at) AS files_skipped,
                   arg_max(images, recorded_at) AS images,
                   arg_max(quarantined, recorded_at) AS quarantined,
                   arg_max(params, recorded_at) AS params
            FROM {runs_src} GROUP BY ALL"""


def _lineage_view(ws: Workspace) -> str:
    # Unioned by name with the full schema, so every column exists even when only parts written
    # before `path_bytes` are there; those held UTF-8 paths only, so the bytes are their encoding.
    src = f"({schema.empty_select(schema.LINEAGE)})"
    if any(ws.lineage_dir.glob("*.parquet")):
        src += f" UNION ALL BY NAME (SELECT * FROM read_parquet('{sql_str(ws.lineage_dir / '*.parquet')}', union_by_name=true))"
    return f"""CREATE OR REPLACE VIEW lineage AS
               SELECT DISTINCT * REPLACE (coalesce(path_bytes, encode(path)) AS path_bytes) FROM ({src})"""


_MEMORY_LIMIT = "256MB"  # per connection; set by the top floor (flows/settings.py, from ORTHO_DUCKDB_MEMORY)


def configure(*, memory_limit: str | None = None) -> None:
    """Process-wide settings of every later `connect`: DuckDB's memory_limit (e.g. '256MB', '2GB')."""
    global _MEMORY_LIMIT
    if memory_limit is not None:
        _MEMORY_LIMIT = str(memory_limit)


def connect(ws: Workspace, private: bool = False, derived: bool = False) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the catalog views. `private` adds `lineage`; `derived` derives the
    current state from the parts even where a fresh snapshot exists."""
    con = duckdb.connect(":memory:")
    # Whole-catalog queries (current versions, duplicate ranks, compaction) spill to disk past this
    # instead of growing with the catalog; insertion order is never relied on.
    con.execute(f"SET memory_limit = '{_MEMORY_LIMIT}'")
    con.execute("SET preserve_insertion_order = false")
    con.execute("SET enable_progress_bar = false")  # a long COPY would draw one on the user's stdout
    con.execute(f"SET temp_directory = '{sql_str(ws.staging_dir / f'duckdb-spill-{os.getpid()}')}'")
    for stmt in view_statements(ws, private=private, derived=derived):
        con.execute(stmt)
    return con


@contextlib.contextmanager
def connection(ws: Workspace, private: bool = False, derived: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    """`connect`, closed when the block ends."""
    con = connect(ws, private=private, derived=derived)
    try:
        yield con
    finally:
        con.close()


def publish(ws: Workspace) -> None:
    """After a committed change (the caller holds the write lock): the current state materialised once, and
    catalog.duckdb pointing at it. A materialisation that fails (out of memory, a full disk) leaves the catalog
    exact: queries derive the current state until the next change publishes; it is logged, never raised."""
    try:
        materialise(ws)
    except (duckdb.Error, OSError) as e:
        log.warning("the current state could not be materialised (%s); queries derive it until the next change",
                    type(e).__name__)
    write_duckdb_file(ws)


def write_duckdb_file(ws: Workspace) -> Path:
    """catalog/catalog.duckdb for the duckdb CLI: the shareable views only, never lineage."""
    with atomic_path(ws.duckdb_path, ws.staging_dir) as tmp, duckdb.connect(str(tmp)) as con:
        for stmt in view_statements(ws):
            con.execute(stmt)
    return ws.duckdb_path


def query(ws: Workspace, sql: str, params: list | None = None) -> tuple[list[str], list[tuple]]:
    with connection(ws) as con:
        cur = con.execute(sql, params or [])
        cols = [d[0] for d in cur.description] if cur.description else []
        rows = cur.fetchall()
    return cols, rows
