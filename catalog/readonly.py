"""The boundary of `ortho sql`: one SELECT (or EXPLAIN) over the catalog's public views, and nothing else.

A statement of another type (DROP, CREATE, INSERT, COPY, ATTACH, SET, PRAGMA, INSTALL/LOAD...) is refused before
anything runs. The query then runs on a connection whose views are bound and whose file access is closed: DuckDB
reads only the folders those views read (`allowed_directories`, derived from the views themselves, so a view added
through catalog/db.py's machinery is allowed with no change here), `enable_external_access` is off and the
configuration locked. So read_parquet over the private lineage, read_csv('/etc/passwd'), glob() and ATTACH all fail;
the private lineage stays behind `ortho lineage` and `catalog.db.connect(ws, private=True)`.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Iterator

import duckdb

from catalog import db
from catalog.errors import OrthoError
from catalog.workspace import Workspace

_ALLOWED = ("SELECT", "EXPLAIN")
_SOURCE = re.compile(r"read_parquet\('((?:[^']|'')*)'")


class QueryRefused(OrthoError):
    """A statement `ortho sql` does not run: it reads the catalog and nothing else."""


def check_statement(sql: str) -> str:
    """`sql` when it is one SELECT or EXPLAIN statement; otherwise a one-line refusal. Returns it without a trailing
    semicolon (it may be wrapped in a COPY for --out)."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as e:
        raise QueryRefused(str(e).splitlines()[0]) from None
    if len(statements) != 1:
        raise QueryRefused(f"ortho sql runs one statement; this holds {len(statements)}")
    kind = str(statements[0].type).rsplit(".", 1)[-1]
    if kind not in _ALLOWED:
        raise QueryRefused(f"ortho sql reads the catalog: a SELECT over its views (SHOW TABLES lists them); "
                           f"{kind} statements are refused")
    return sql.strip().rstrip(";")


def _view_folders(con: duckdb.DuckDBPyConnection) -> set[str]:
    """The folders the connection's views read: the only ones its queries may."""
    folders = set()
    for (sql,) in con.execute("SELECT sql FROM duckdb_views() WHERE NOT internal").fetchall():
        for path in _SOURCE.findall(sql):
            path = path.replace("''", "'")
            fixed = re.split(r"[*?\[]", path, maxsplit=1)[0]  # the part of a glob before its first wildcard
            folders.add(fixed if fixed.endswith("/") else os.path.dirname(fixed) + "/")
    return folders


@contextlib.contextmanager
def closed_connection(ws: Workspace, sql: str, out: Path | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection with the views `sql` names, bound, and file access closed but for the views' folders (and
    `out`, the file --out writes)."""
    with db.connection(ws, views=db.views_named(sql)) as con:
        spill = con.execute("SELECT current_setting('temp_directory')").fetchone()[0]
        allowed = sorted(_view_folders(con) | ({spill.rstrip("/") + "/"} if spill else set()))
        con.execute("SET allowed_directories = ?", [allowed])
        if out is not None:
            con.execute("SET allowed_paths = ?", [[str(Path(out).absolute())]])
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        yield con


def _refusal(e: duckdb.Error) -> OrthoError:
    if isinstance(e, duckdb.PermissionException):  # its text may name the path asked for: not repeated
        return QueryRefused("ortho sql reads the catalog's views only: files, extensions and other databases are "
                            "out of reach (`ortho lineage FILE_ID` tells where a file came from)")
    return OrthoError(str(e).splitlines()[0])


def public_query(ws: Workspace, sql: str) -> tuple[list[str], list[tuple]]:
    """One SELECT's columns and rows, inside the boundary."""
    sql = check_statement(sql)
    try:
        with closed_connection(ws, sql) as con:
            cur = con.execute(sql)
            return [d[0] for d in cur.description] if cur.description else [], cur.fetchall()
    except duckdb.Error as e:
        raise _refusal(e) from None


def copy_public_query(ws: Workspace, sql: str, out: Path, options: str) -> None:
    """One SELECT written to `out` by DuckDB (COPY ... TO with `options`), inside the boundary."""
    sql = check_statement(sql)
    target = str(Path(out).absolute()).replace("'", "''")
    try:
        with closed_connection(ws, sql, out) as con:
            con.execute(f"COPY ({sql}) TO '{target}' ({options})")
    except duckdb.Error as e:
        raise _refusal(e) from None
