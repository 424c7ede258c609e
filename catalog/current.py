"""The catalog's current state, materialised: `images`, `files` and `labels` written once per change as Parquet.

The views in db.py derive current versions, canonical occurrences and slice order with window functions over
every part; at 1.2M images that costs over a second a query. After each committed ingest, curation or compaction,
`materialise` (catalog/publish.py) runs that derivation once and writes its three results to catalog/current/<snapshot_id>/, sorted
so that the usual filters (source, modality, body part, split, patient) prune row groups, then publishes it by
rewriting catalog/current/CURRENT.json in one rename.

A snapshot records the fingerprint of the inputs it was derived from (the names of the committed parts, the
current curation run, the split files). A connection uses it only while the fingerprint still matches, and
derives the views as before otherwise, so a commit that was killed before its snapshot was written can never
show a stale catalog: the worst a kill costs is the speed, until the next change publishes a new snapshot.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from catalog.workspace import Workspace

VERSION = 1  # of the derivation: a change of the views' SQL changes it, and old snapshots stop matching
TABLES = {  # table -> sort order (what queries filter on first)
    "images": "source, modality, body_part, split, patient_key, image_id",
    "files": "source, status, file_id",
    "labels": "task, source, image_id",
}


def current_dir(ws: Workspace) -> Path:
    return ws.current_dir


def fingerprint(ws: Workspace) -> str:
    """What the three tables are derived from, by name: parts and curation runs are immutable once committed."""
    h = hashlib.sha256(f"v{VERSION}".encode())
    for folder in (ws.parts_dir, ws.splits_dir):
        names = sorted(os.listdir(folder)) if folder.is_dir() else []
        h.update(f"\0{folder.name}:{','.join(names)}".encode())
    runs = sorted(p.name for p in ws.curation_dir.iterdir() if p.is_dir()) if ws.curation_dir.is_dir() else []
    h.update(f"\0curation:{runs[-1] if runs else ''}".encode())
    return h.hexdigest()


def fresh_snapshot(ws: Workspace) -> Path | None:
    """The published snapshot's folder, if it was derived from the catalog as it is now."""
    pointer = current_dir(ws) / "CURRENT.json"
    try:
        published = json.loads(pointer.read_text())
    except (OSError, ValueError):
        return None
    folder = current_dir(ws) / str(published.get("snapshot"))
    if published.get("fingerprint") != fingerprint(ws) or not all((folder / f"{t}.parquet").is_file() for t in TABLES):
        return None
    return folder
