"""DuckDB views over the Parquet parts: the catalog as users query it.

The parts record facts (a file was read, it produced these images); the views derive status:
an image's canonical occurrence is the first by (source_seq, generation, file_id, frame_index),
an order that does not depend on which parallel batch finished first, so a killed and re-run
ingest gives exactly the catalog an uninterrupted one gives.

Creating a view binds it: DuckDB reads the footers of the files it names. A connection creates every view by
default; `query` creates only those its SQL names and the views they read, so `ortho sql` over `images` at 1.2M
images binds one snapshot file, not the parts and thousands of signature files (issue 16).
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import duckdb

from catalog.current import TABLES, fresh_snapshot
from catalog.files import atomic_path
from catalog.workspace import Workspace

log = logging.getLogger("ortho.catalog")


def sql_str(path: Path | str) -> str:
    """A path as a single-quoted SQL string's content."""
    return str(path).replace("'", "''")


def _empty(schema_name: str) -> str:
    """A typed, empty SELECT for a view whose files do not exist yet. The schemas are Arrow's: importing them
    costs pyarrow (~0.2 s), so only a view that needs one does."""
    from catalog import schema

    return f"({schema.empty_select(getattr(schema, schema_name))})"


def _files_source(con: duckdb.DuckDBPyConnection, folder: Path, pattern: str, schema_name: str) -> str:
    """read_parquet over folder/pattern. The project writes each kind of file with one schema, so DuckDB may bind
    the glob from its first file; union_by_name would read every file's footer each time a view is created or
    queried (0.4 s for the 2,344 signature files of 1.2M images). After a schema change the oldest and the newest
    file differ (names sort by time), and only then is it unioned by name, as old files lack the new columns."""
    files = sorted(glob.glob(str(folder / pattern)))  # glob.glob: a third of pathlib's time on thousands of files
    if not files:
        return _empty(schema_name)
    src = sql_str(folder / pattern)
    if len(files) > 1 and not _same_columns(con, files[0], files[-1]):
        return f"read_parquet('{src}', union_by_name=true)"
    return f"read_parquet('{src}')"


def _same_columns(con: duckdb.DuckDBPyConnection, a: str, b: str) -> bool:
    try:
        return _columns(con, a) == _columns(con, b)
    except duckdb.IOException:  # removed since the listing (a compaction's cleanup): the union is always right
        return False


def _columns(con: duckdb.DuckDBPyConnection, path: str) -> list[tuple]:
    return con.execute(f"DESCRIBE SELECT * FROM read_parquet('{sql_str(path)}')").fetchall()


@dataclass(frozen=True)
class _View:
    select: Callable[[duckdb.DuckDBPyConnection], str]  # built only when the view is created
    reads: tuple[str, ...] = ()  # the views it selects from


# Every view, in an order where each reads only views before it. `lineage` only on private connections.
VIEWS = ("evals", "embeddings", "clusters", "signatures", "keypoints", "splits", "dup_groups", "quality", "leakage",
         "unreadable", "file_versions", "current_files", "occurrences", "images", "files", "labels", "runs", "lineage")
_NAMES = re.compile(r"\b(" + "|".join(VIEWS) + r")\b", re.IGNORECASE)
# what lists the catalog's objects rather than naming one: it needs every view
_LISTING = re.compile(r"\b(show|information_schema|pg_catalog|pragma|duckdb_\w+)\b", re.IGNORECASE)


def views_named(sql: str) -> set[str] | None:
    """The views a query needs created: those it names (a word match, so a column or a string that spells a view's
    name only adds a view, it never hides one); None (every view) for a query that lists the catalog's objects."""
    if _LISTING.search(sql):
        return None
    return {m.lower() for m in _NAMES.findall(sql)}


def _views(ws: Workspace, private: bool, derived: bool) -> dict[str, _View]:
    snapshot = None if derived else fresh_snapshot(ws)
    views = {**_curation_views(ws), **_file_views(ws)}
    if snapshot is not None:
        for t in TABLES:
            views[t] = _View(lambda con, t=t: f"SELECT * FROM read_parquet('{sql_str(snapshot / f'{t}.parquet')}')")
    else:
        views |= _current_views(ws)
    views["runs"] = _runs_view(ws)
    if private:
        views["lineage"] = _lineage_view(ws)
    assert list(views) == [v for v in VIEWS if v in views]
    return views


def view_statements(ws: Workspace, con: duckdb.DuckDBPyConnection, private: bool = False, derived: bool = False,
                    names: Iterable[str] | None = None) -> list[str]:
    """The CREATE VIEW statements in execution order, of `names` and the views they read (every view when None).
    `images`, `files` and `labels` read the materialised snapshot while it is fresh (catalog/current.py), unless
    `derived`. `con` reads the footers that decide how a glob of files is read."""
    views = _views(ws, private, derived)
    wanted = set(views) if names is None else _with_reads(views, names)
    return [f"CREATE OR REPLACE VIEW {name} AS {view.select(con)}" for name, view in views.items() if name in wanted]


def _with_reads(views: dict[str, _View], names: Iterable[str]) -> set[str]:
    out, todo = set(), [n for n in names if n in views]
    while todo:
        name = todo.pop()
        if name not in out:
            out.add(name)
            todo += views[name].reads
    return out


def _parts_source(con: duckdb.DuckDBPyConnection, ws: Workspace, table: str, schema_name: str) -> str:
    return _files_source(con, ws.parts_dir, f"*/{table}.parquet", schema_name)


def _current_curation_run(ws: Workspace) -> Path | None:
    return max((p for p in ws.curation_dir.glob("*") if p.is_dir()), default=None, key=lambda p: p.name)


def _curation_views(ws: Workspace) -> dict[str, _View]:
    """evals, embeddings, clusters and the curation outputs (signatures, keypoints, splits, dups, quality, leakage)."""
    def recomputed(name: str, schema_name: str) -> _View:  # by every curation run, into its own folder
        def select(con):
            current = _current_curation_run(ws)
            src = f"read_parquet('{sql_str(current / f'{name}.parquet')}')" if current else _empty(schema_name)
            return f"SELECT * FROM {src}"
        return _View(select)

    def appended(folder: Path, schema_name: str, qualify: str = "") -> _View:
        return _View(lambda con: f"SELECT * FROM {_files_source(con, folder, '*.parquet', schema_name)} {qualify}")

    def per_model(name: str, schema_name: str) -> _View:  # catalog/embeddings.py: a folder per model
        return _View(lambda con: f"SELECT * FROM {_files_source(con, ws.embeddings_dir, name, schema_name)}")

    return {
        "evals": appended(ws.evals_catalog_dir, "EVAL"),
        "embeddings": per_model("*/part-*.parquet", "EMBEDDING"),
        "clusters": per_model("*/clusters.parquet", "CLUSTER"),
        "signatures": appended(ws.signatures_dir, "SIGNATURE"),
        "keypoints": appended(ws.keypoints_dir, "KEYPOINTS"),
        "splits": appended(ws.splits_dir, "SPLIT",
                           "QUALIFY row_number() OVER (PARTITION BY patient_key ORDER BY run_id) = 1"),
        "dup_groups": recomputed("dups", "DUPS"),
        "quality": recomputed("quality", "QUALITY"),
        "leakage": recomputed("leakage", "LEAKAGE"),
        "unreadable": appended(ws.unreadable_dir, "UNREADABLE"),
    }


def _file_views(ws: Workspace) -> dict[str, _View]:
    """file_versions, current_files (each file's newest version) and occurrences (those of current files,
    ranked)."""
    return {
        "file_versions": _View(lambda con: f"SELECT * FROM {_parts_source(con, ws, 'files', 'FILE_ROW')}"),
        "current_files": _View(lambda con: """
           SELECT * FROM file_versions
           QUALIFY row_number() OVER (PARTITION BY source, file_id
                                      ORDER BY generation DESC, committed_at DESC, part_id DESC) = 1""",
                               ("file_versions",)),
        "occurrences": _View(lambda con: f"""
            SELECT o.*,
                   row_number() OVER (PARTITION BY o.image_id
                                      ORDER BY o.source_seq, o.generation, o.file_id, o.frame_index) AS occurrence_rank,
                   CASE WHEN o.series_key IS NULL THEN 0
                        ELSE dense_rank() OVER (PARTITION BY o.series_key, o.volume_index
                                                ORDER BY o.slice_position NULLS LAST,
                                                         o.instance_number NULLS LAST, o.frame_index) - 1
                   END AS slice_index
            FROM {_parts_source(con, ws, 'occurrences', 'OCCURRENCE')} o
            SEMI JOIN current_files f ON o.part_id = f.part_id AND o.file_id = f.file_id""", ("current_files",)),
    }


def _current_views(ws: Workspace) -> dict[str, _View]:
    """images, files and labels derived from the parts (what the snapshot holds when it is fresh)."""
    return {"images": _View(lambda con: _IMAGES, ("occurrences", "splits", "dup_groups", "quality", "leakage")),
            "files": _View(lambda con: _FILES, ("current_files", "occurrences")),
            "labels": _View(lambda con: f"""
            SELECT DISTINCT l.image_id, l.task, l.value, l.source
            FROM {_parts_source(con, ws, 'labels', 'LABEL')} l
            SEMI JOIN current_files f ON l.part_id = f.part_id AND l.file_id = f.file_id""", ("current_files",))}


# One row per image (its canonical occurrence), with its split, duplicate group and exclusion.
_IMAGES = """
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

# One row per current file, with its status: ingested, duplicate or quarantined.
_FILES = """
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


def _runs_view(ws: Workspace) -> _View:
    """One row per run: its latest recorded state."""
    return _View(lambda con: f"""
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
            FROM {_files_source(con, ws.runs_dir, '*.parquet', 'RUN')} GROUP BY ALL""")


def _lineage_view(ws: Workspace) -> _View:
    # Unioned by name with the full schema, so every column exists even when only parts written
    # before `path_bytes` are there; those held UTF-8 paths only, so the bytes are their encoding.
    def select(con):
        src = _empty("LINEAGE")
        if any(ws.lineage_dir.glob("*.parquet")):
            src += f" UNION ALL BY NAME (SELECT * FROM {_files_source(con, ws.lineage_dir, '*.parquet', 'LINEAGE')})"
        return f"SELECT DISTINCT * REPLACE (coalesce(path_bytes, encode(path)) AS path_bytes) FROM ({src})"
    return _View(select)


_MEMORY_LIMIT = "256MB"  # per connection; set by the top floor (flows/settings.py, from ORTHO_DUCKDB_MEMORY)


def configure(*, memory_limit: str | None = None) -> None:
    """Process-wide settings of every later `connect`: DuckDB's memory_limit (e.g. '256MB', '2GB')."""
    global _MEMORY_LIMIT
    if memory_limit is not None:
        _MEMORY_LIMIT = str(memory_limit)


def connect(ws: Workspace, private: bool = False, derived: bool = False,
            views: Iterable[str] | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the catalog views. `private` adds `lineage`; `derived` derives the
    current state from the parts even where a fresh snapshot exists; `views`: only these and the views they read
    (every view when None)."""
    con = duckdb.connect(":memory:")
    # Whole-catalog queries (current versions, duplicate ranks, compaction) spill to disk past this
    # instead of growing with the catalog; insertion order is never relied on.
    con.execute(f"SET memory_limit = '{_MEMORY_LIMIT}'")
    con.execute("SET preserve_insertion_order = false")
    con.execute("SET enable_progress_bar = false")  # a long COPY would draw one on the user's stdout
    con.execute(f"SET temp_directory = '{sql_str(ws.staging_dir / f'duckdb-spill-{os.getpid()}')}'")
    for stmt in view_statements(ws, con, private=private, derived=derived, names=views):
        con.execute(stmt)
    return con


@contextlib.contextmanager
def connection(ws: Workspace, private: bool = False, derived: bool = False,
               views: Iterable[str] | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """`connect`, closed when the block ends."""
    con = connect(ws, private=private, derived=derived, views=views)
    try:
        yield con
    finally:
        con.close()


def write_duckdb_file(ws: Workspace) -> Path:
    """catalog/catalog.duckdb for the duckdb CLI: the shareable views only, never lineage. Its paths are relative to
    the workspace, so a copied or moved workspace reads its own files: open it from the workspace folder
    (`cd WORKSPACE && duckdb catalog/catalog.duckdb`) or with `SET file_search_path = 'WORKSPACE'`."""
    with atomic_path(ws.duckdb_path, ws.staging_dir) as tmp, duckdb.connect(str(tmp)) as con:
        con.execute(f"SET file_search_path = '{sql_str(ws.root)}'")  # where the relative views bind
        for stmt in view_statements(ws, con):
            con.execute(relative_to_workspace(ws, stmt))
    return ws.duckdb_path


def relative_to_workspace(ws: Workspace, statement: str) -> str:
    """A view's SQL with every path inside the workspace written relative to it (a quoted path starts a literal)."""
    return statement.replace(f"'{sql_str(ws.root)}/", "'")


def query(ws: Workspace, sql: str, params: list | None = None) -> tuple[list[str], list[tuple]]:
    """One statement's columns and rows, on a connection with only the views it names (`views_named`): a question
    about `images` does not pay for binding the curation's thousands of signature files."""
    with connection(ws, views=views_named(sql)) as con:
        cur = con.execute(sql, params or [])
        cols = [d[0] for d in cur.description] if cur.description else []
        rows = cur.fetchall()
    return cols, rows
