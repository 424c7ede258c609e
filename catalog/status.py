"""Read-only summaries of the catalog for `ortho status`, `ortho tasks list`, `ortho lineage` and the ingest
summary: named SQL over the views, one connection per summary."""

from __future__ import annotations

import json

from catalog import db
from catalog.unreadable import BY_STAGE as UNREADABLE_BY_STAGE
from catalog.workspace import Workspace

STATUS_QUERIES = {
    "files": "SELECT source, status, count(*) FROM files GROUP BY ALL ORDER BY ALL",
    "images": "SELECT modality, body_part, count(*), count(*) FILTER (WHERE excluded) FROM images "
              "GROUP BY ALL ORDER BY ALL",
    "reasons": "SELECT reason, count(*) FROM files WHERE status='quarantined' GROUP BY ALL ORDER BY 2 DESC",
    "labels": "SELECT task, count(DISTINCT image_id) FROM labels GROUP BY ALL ORDER BY ALL",
    "splits": "SELECT split, count(*) FROM splits GROUP BY ALL ORDER BY ALL",
    "ingests": "SELECT run_id, kind, source, status, files_processed, images, finished_at FROM runs "
               "WHERE kind <> 'pretrain' ORDER BY started_at DESC LIMIT 5",
    "pretrains": "SELECT run_id, source, status, params, started_at FROM runs WHERE kind = 'pretrain' "
                 "ORDER BY started_at DESC LIMIT 5",
    "evals": "SELECT eval_id, string_agg(DISTINCT task, ', '), count(*), max(recorded_at) FROM evals "
             "GROUP BY ALL ORDER BY 4 DESC LIMIT 5",
    "failures": "SELECT file_id, source, reason, committed_at FROM files WHERE status = 'quarantined' "
                "ORDER BY committed_at DESC, file_id LIMIT 5",
    "failed_runs": "SELECT run_id, kind, status, started_at FROM runs WHERE status = 'failed' "
                   "ORDER BY started_at DESC LIMIT 5",
    "unreadable": UNREADABLE_BY_STAGE,
}

LABELLED_IMAGES = """SELECT l.task, coalesce(i.split, 'unsplit') AS split, l.value, count(DISTINCT l.image_id)
                     FROM labels l JOIN images i USING (image_id) GROUP BY ALL ORDER BY ALL"""

RUN_STATUSES = "SELECT run_id, status, count(*) FROM files WHERE run_id IN (SELECT unnest(?)) GROUP BY ALL"

RUN_QUARANTINE_REASONS = """SELECT source, reason, count(*) FROM files WHERE status = 'quarantined'
                            AND run_id IN (SELECT unnest(?)) GROUP BY ALL ORDER BY ALL"""

FILE_LINEAGE = "SELECT DISTINCT source, location, path, size, run_id FROM lineage WHERE file_id = ?"


def _fetch(ws: Workspace, queries: dict[str, tuple[str, list]], private: bool = False) -> dict[str, list[tuple]]:
    with db.connection(ws, private=private) as con:
        return {name: con.execute(sql, params).fetchall() for name, (sql, params) in queries.items()}


def catalog_status(ws: Workspace) -> dict:
    """Files, images, labels, splits, recent runs, evaluations and the latest failures, as plain values."""
    q = _fetch(ws, {name: (sql, []) for name, sql in STATUS_QUERIES.items()})
    pretraining = []
    for run_id, shard_set, status, params, started in q["pretrains"]:
        p = json.loads(params or "{}")
        pretraining.append({"run_id": run_id, "shard_set": shard_set, "status": status, "steps": p.get("steps"),
                            "loss": p.get("loss"), "started": started})
    return {
        "files": [{"source": a, "status": b, "count": c} for a, b, c in q["files"]],
        "images": [{"modality": a, "body_part": b, "count": c, "excluded": e} for a, b, c, e in q["images"]],
        "quarantine_reasons": {a: b for a, b in q["reasons"]},
        "labels": {a: b for a, b in q["labels"]},
        "patients_by_split": {a: b for a, b in q["splits"]},
        "recent_runs": [dict(zip(("run_id", "kind", "source", "status", "files", "images", "finished"), r))
                        for r in q["ingests"]],
        "pretraining_runs": pretraining,
        "evaluations": [{"eval_id": a, "tasks": b, "results": c, "recorded": d} for a, b, c, d in q["evals"]],
        "unreadable_images": [dict(zip(("stage", "reason", "images"), r)) for r in q["unreadable"]],
        "last_failures": {"files": [dict(zip(("file_id", "source", "reason", "at"), r)) for r in q["failures"]],
                          "runs": [dict(zip(("run_id", "kind", "status", "at"), r)) for r in q["failed_runs"]]},
    }


def labelled_images(ws: Workspace) -> dict[str, dict[str, dict[str, int]]]:
    """task -> split ('unsplit' before curation) -> label value -> labelled images."""
    counts: dict[str, dict[str, dict[str, int]]] = {}
    for task, split, value, n in _fetch(ws, {"rows": (LABELLED_IMAGES, [])})["rows"]:
        counts.setdefault(task, {}).setdefault(split, {})[value] = n
    return counts


def run_file_counts(ws: Workspace, run_ids: list[str]) -> tuple[dict[str, dict[str, int]], list[tuple]]:
    """Files by status for each run, and the runs' quarantined files as (source, reason, files) rows."""
    q = _fetch(ws, {"statuses": (RUN_STATUSES, [run_ids]), "reasons": (RUN_QUARANTINE_REASONS, [run_ids])})
    by_run: dict[str, dict[str, int]] = {}
    for run_id, status, n in q["statuses"]:
        by_run.setdefault(run_id, {})[status] = n
    return by_run, q["reasons"]


def file_lineage(ws: Workspace, file_id: str) -> list[tuple]:
    """(source, location, path, size, run_id) rows of a file id: private, a path may identify someone."""
    return _fetch(ws, {"rows": (FILE_LINEAGE, [file_id])}, private=True)["rows"]
