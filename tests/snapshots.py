"""The catalog as users see it, minus run ids and times: what a killed-and-rerun run must reproduce."""

from catalog import db

INGESTED = {
    "files": "SELECT * EXCLUDE (run_id, committed_at, generation) FROM files ORDER BY ALL",
    "images": "SELECT * FROM images ORDER BY image_id",
    "labels": "SELECT * FROM labels ORDER BY ALL",
}

CURATED = {
    "signatures": "SELECT * EXCLUDE (run_id) FROM signatures ORDER BY image_id",
    "dup_groups": "SELECT * EXCLUDE (run_id) FROM dup_groups ORDER BY ALL",
    "quality": "SELECT * EXCLUDE (run_id) FROM quality ORDER BY ALL",
    "splits": "SELECT * EXCLUDE (run_id) FROM splits ORDER BY ALL",
    "leakage": "SELECT * EXCLUDE (run_id) FROM leakage ORDER BY ALL",
    "images": "SELECT image_id, split, dup_group, dup_representative, excluded, held_out FROM images ORDER BY ALL",
}


def ingested_snapshot(ws) -> dict:
    return {name: db.query(ws, sql)[1] for name, sql in INGESTED.items()}


def curated_snapshot(ws) -> dict:
    out = {}
    for name, sql in CURATED.items():
        if "run_id" not in db.query(ws, f"SELECT * FROM {name} LIMIT 0")[0]:
            sql = sql.replace(" EXCLUDE (run_id)", "")
        out[name] = db.query(ws, sql)[1]
    return out
