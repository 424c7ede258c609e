"""The stages' firewall record: a stored image that curation, shard building, export, a report, `ortho embed` or an
evaluation could not open (over the pixel budget, a codestream that lies about its size, a corrupt or missing
object) is excluded by that stage with a reason, and the stage goes on. Each run that met one appends its rows here (catalog/unreadable/,
the `unreadable` view); `ortho status` and the curation report count them, curation flags the images excluded.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from dataclasses import dataclass, field

from catalog.ids import token
from catalog.workspace import Workspace

log = logging.getLogger("ortho.unreadable")

STAGES = ("curate", "shards", "export", "report", "embed", "evaluate")


@dataclass
class Unreadable:
    """What one run of a stage could not open: image id -> reason."""

    stage: str
    run_id: str
    images: dict[str, str] = field(default_factory=dict)

    def add(self, image_id: str, reason: str) -> None:
        # ids and reason codes only: a message could hold a path
        log.warning("%s: image %s excluded (%s)", self.stage, image_id, reason)
        self.images[image_id] = reason

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(self.images.values()).items()))

    def save(self, ws: Workspace) -> None:
        if not self.images:
            return
        now = dt.datetime.now(dt.timezone.utc)
        rows = [{"image_id": i, "stage": self.stage, "reason": r, "run_id": self.run_id, "recorded_at": now}
                for i, r in sorted(self.images.items())]
        ws.unreadable_dir.mkdir(parents=True, exist_ok=True)
        from catalog.parts import write_table  # pyarrow: not on `ortho status`'s import path
        from catalog.schema import UNREADABLE

        write_table(ws.unreadable_dir / f"{self.stage}-{self.run_id}-{token(3)}.parquet", rows, UNREADABLE,
                    ws.staging_dir)


# images of the catalog a stage excluded (distinct over its runs); curation's stop counting once a later run read
# the image (it then has a signature). `ortho status` shows these.
BY_STAGE = """SELECT stage, reason, count(DISTINCT image_id) FROM unreadable
              WHERE image_id IN (SELECT image_id FROM images)
                AND NOT (stage = 'curate' AND image_id IN (SELECT image_id FROM signatures))
              GROUP BY ALL ORDER BY ALL"""

# the images curation could not read and has not read since: flagged and excluded (curation/quality.py)
CURATION_UNREADABLE = """SELECT DISTINCT image_id FROM unreadable WHERE stage = 'curate'
                         AND image_id NOT IN (SELECT image_id FROM signatures)"""
