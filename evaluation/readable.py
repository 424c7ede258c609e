"""Evaluation's firewall: a labelled image whose stored object cannot be read (missing, over the pixel budget, a PNG
that declares another size than the catalog, a chunk that fails its CRC) is left out of the task with a reason,
recorded (catalog/unreadable.py, stage `evaluate`) and counted in metrics.json, and the evaluation goes on with
the rest. The check is the shard builder's (shards/readable.py): headers and CRCs, nothing decoded twice.

A shard set needs no such check: its samples were checked when it was built and are verified by checksum.
"""

from __future__ import annotations

import numpy as np

from catalog import db
from catalog.store import ImageStore
from catalog.unreadable import Unreadable
from catalog.workspace import Workspace
from evaluation.data import TaskData
from shards.readable import object_problem


def readable_task(ws: Workspace, task: TaskData, unreadable: Unreadable) -> TaskData:
    """The task without the images whose stored objects cannot be read (those are added to `unreadable`)."""
    store = ImageStore(ws.store_dir)
    sizes = _declared_sizes(ws, task.image_ids)
    keep = []
    for k, image_id in enumerate(task.image_ids):
        try:
            data = store.path(image_id).read_bytes()
        except FileNotFoundError:
            unreadable.add(image_id, "missing_object")
            continue
        problem = object_problem(data, *sizes.get(image_id, (None, None)))
        if problem:
            unreadable.add(image_id, problem)
        else:
            keep.append(k)
    return task if len(keep) == len(task.image_ids) else task.subset(np.array(keep, dtype=np.int64))


def _declared_sizes(ws: Workspace, image_ids: list[str]) -> dict[str, tuple[int, int]]:
    with db.connection(ws) as con:
        rows = con.execute("SELECT image_id, rows, cols FROM images WHERE image_id IN (SELECT unnest(?::VARCHAR[]))",
                           [image_ids]).fetchall()
    return {i: (r, c) for i, r, c in rows}
