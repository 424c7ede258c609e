"""Selecting images for a shard set with SQL, and the metadata each sample carries."""

from __future__ import annotations

import hashlib
import json

import duckdb

from catalog import db
from catalog.errors import OrthoError
from catalog.workspace import Workspace

# What training and evaluation need; all of it already de-identified in the catalog.
SAMPLE_COLUMNS = [
    "image_id", "source", "modality", "body_part", "view", "laterality", "plane", "sequence_family",
    "fat_suppressed", "pixel_spacing_row", "pixel_spacing_col", "slice_thickness", "rows", "cols", "bits",
    "window_center", "window_width", "intensity_scale", "intensity_offset", "patient_key", "study_key",
    "series_key", "slice_index", "split", "source_split", "dup_group", "store_path",
]


class SelectionError(OrthoError, ValueError):
    pass


def select(ws: Workspace, query: str, include_excluded: bool = False, evaluation: bool = False) -> list[dict]:
    """Rows of SAMPLE_COLUMNS plus `labels` for the images the query names, sorted by image id.

    Guards: curation exclusions (quality, non-representative duplicates) and the leakage guard
    (evaluation patients and anything duplicating an evaluation image) unless `include_excluded`;
    an `evaluation` selection keeps held-out images and still drops excluded ones."""
    with db.connection(ws) as con:
        try:
            cur = con.execute(f"SELECT * FROM ({query.strip().rstrip(';')}) LIMIT 0")
        except duckdb.Error as e:
            raise SelectionError(f"query failed: {str(e).splitlines()[0]}") from None
        if "image_id" not in [d[0] for d in cur.description]:
            raise SelectionError("the query must return an image_id column")
        guard = "" if include_excluded else "WHERE NOT i.excluded" + ("" if evaluation else " AND NOT i.held_out")
        cols = ", ".join(f"i.{c}" for c in SAMPLE_COLUMNS)
        rows = con.execute(f"""
            WITH chosen AS (SELECT DISTINCT image_id FROM ({query.strip().rstrip(';')})),
                 lab AS (SELECT image_id, map(list(task ORDER BY task), list(value ORDER BY task)) AS labels
                         FROM (SELECT image_id, task, min(value) AS value FROM labels GROUP BY ALL) GROUP BY image_id)
            SELECT {cols}, lab.labels
            FROM images i JOIN chosen USING (image_id) LEFT JOIN lab USING (image_id)
            {guard}
            ORDER BY i.image_id""").fetchall()
        names = SAMPLE_COLUMNS + ["labels"]
    out = []
    for row in rows:
        rec = dict(zip(names, row))
        rec["labels"] = dict(rec["labels"] or {})
        out.append(rec)
    return out


def sample_json(rec: dict) -> bytes:
    meta = {k: v for k, v in rec.items() if k not in ("store_path",)}
    return json.dumps(meta, sort_keys=True, separators=(",", ":"), default=str).encode()


def selection_digest(records: list[dict]) -> str:
    h = hashlib.sha256()
    for rec in records:
        h.update(sample_json(rec))
    return h.hexdigest()


def catalog_snapshot(ws: Workspace) -> dict:
    """Which catalog parts the selection read: enough to rebuild or to tell that it changed."""
    parts = sorted(p.name for p in ws.parts_dir.iterdir() if p.is_dir())
    return {"parts": len(parts), "parts_sha256": hashlib.sha256("\n".join(parts).encode()).hexdigest(),
            "last_part": parts[-1] if parts else None}
