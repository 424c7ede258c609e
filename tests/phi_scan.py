"""Scans for planted identifying values: a whole workspace (Parquet decoded, PNG chunks checked) and
Prefect's database (every table, and the raw bytes of the file and its WAL).

Parquet and PNG are compressed, so a byte scan alone proves little: Parquet columns are decoded
and searched as text, and PNG files must hold no chunk other than pixels.
"""

import re
import sqlite3
from pathlib import Path

import pyarrow.parquet as pq

ALLOWED_PNG_CHUNKS = {b"IHDR", b"IDAT", b"IEND"}


def _png_chunks(data: bytes) -> set[bytes]:
    chunks, pos = set(), 8
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        chunks.add(data[pos + 4 : pos + 8])
        pos += 12 + length
    return chunks


def scan_workspace(root: Path, needles: list[str]) -> list[str]:
    pattern = re.compile("|".join(re.escape(n) for n in needles), re.IGNORECASE)
    hits = []
    for path in root.rglob("*"):
        if not path.is_file() or "lineage" in path.relative_to(root).parts:
            continue
        rel = str(path.relative_to(root))
        if pattern.search(rel):
            hits.append(f"path {rel}")
        data = path.read_bytes()
        if pattern.search(data.decode("latin-1")):
            hits.append(f"bytes of {rel}")
        if path.suffix == ".parquet":
            text = str(pq.read_table(path).to_pylist())
            if pattern.search(text):
                hits.append(f"decoded {rel}: {pattern.search(text).group(0)}")
        if path.suffix == ".png":
            extra = _png_chunks(data) - ALLOWED_PNG_CHUNKS
            if extra:
                hits.append(f"png chunks {extra} in {rel}")
    return hits


def prefect_database() -> Path:
    from prefect.logging.handlers import APILogHandler
    from prefect.settings import PREFECT_SERVER_DATABASE_CONNECTION_URL

    APILogHandler().flush()  # the logs of this test reach the server before it is read
    return Path(PREFECT_SERVER_DATABASE_CONNECTION_URL.value().split("///", 1)[1])


def database_hits(path: Path, pattern: str) -> list[str]:
    """Every table's rows as text, and the raw bytes of the file and its WAL (deleted rows too)."""
    found = re.compile(pattern, re.IGNORECASE)
    hits = [f"bytes of {p.name}" for p in path.parent.glob(path.name + "*") if found.search(p.read_bytes().decode("latin-1"))]
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [t for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for row in con.execute(f'SELECT * FROM "{table}"'):
                text = " ".join(v.decode("latin-1") if isinstance(v, bytes) else str(v) for v in row)
                if found.search(text):
                    hits.append(f"{table}: {found.search(text).group(0)}")
    finally:
        con.close()
    return hits
