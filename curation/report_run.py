"""One curation run being reported (curation/report.py): its connection with the run's tables as views, its
settings, and its images' thumbnails."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from catalog.html import img_tag, thumbnail_png
from catalog.ids import new_run_id
from catalog.pixel_budget import PixelsRefused
from catalog.schema import DUPS, LEAKAGE, QUALITY, empty_select
from catalog.store import ImageStore
from catalog.unreadable import Unreadable
from catalog.workspace import Workspace
from curation.run import CurateConfig, resolve_config


TABLES = {"dups": DUPS, "quality": QUALITY, "leakage": LEAKAGE}


@dataclass(frozen=True)
class ReportLimits:
    groups: int = 36  # near-duplicate groups shown: per method, half the most borderline, half a random draw
    members: int = 3  # images per group (the representative first, then the weakest matches)
    per_reason: int = 12  # images per quality reason (a random draw)
    file_ids: int = 20  # file ids listed per quarantine reason
    tasks: int = 12  # label tasks plotted
    side: int = 120  # a thumbnail's longer side, pixels


def quoted(text: str | Path) -> str:
    return "'" + str(text).replace("'", "''") + "'"


@dataclass
class ReportRun:
    """One run being reported: its connection with the run's tables as views (run_*, prev_* for the run before),
    its settings, and the thumbnails drawn so far."""

    ws: Workspace
    con: object
    run_id: str
    prev_id: str | None
    limits: ReportLimits
    cfg: CurateConfig = field(default_factory=CurateConfig)
    settings_found: bool = False
    thumbs: dict = field(default_factory=dict)
    splits: list = field(default_factory=list)  # (split, patients, images, excluded, held out)
    mix: list = field(default_factory=list)  # (split, "modality body_part", images)

    def __post_init__(self):
        self.store = ImageStore(self.ws.store_dir)
        self.unreadable = Unreadable("report", new_run_id())
        self.cfg, self.settings_found = run_settings(self.ws, self.run_id)

    def rows(self, sql: str, params: dict | list | None = None) -> list[tuple]:
        return self.con.execute(sql, params or []).fetchall()

    def value(self, sql: str, params: dict | list | None = None):
        return self.rows(sql, params)[0][0]

    def register_views(self) -> None:
        for prefix, rid in (("run", self.run_id), ("prev", self.prev_id)):
            for name, schema in TABLES.items():
                path = self.ws.curation_dir / rid / f"{name}.parquet" if rid else None
                src = f"read_parquet({quoted(path)})" if path and path.is_file() else f"({empty_select(schema)})"
                self.con.execute(f"CREATE TEMP VIEW {prefix}_{name} AS SELECT * FROM {src}")
        self.con.execute(f"CREATE TEMP VIEW run_splits AS SELECT * FROM splits WHERE run_id <= {quoted(self.run_id)}")
        self.con.execute(RUN_IMAGES)
        self.con.execute(RUN_META)
        rows = self.rows(SPLIT_COUNTS)
        self.splits = [(s, *counts) for s, _, whole, *counts in rows if whole]  # split, patients, images, ...
        self.mix = [(s, kind, n) for s, kind, whole, _, n, *_ in rows if not whole]

    def thumb(self, image_id: str) -> bytes | None:
        if image_id not in self.thumbs:
            pixels = self.pixels(image_id)
            self.thumbs[image_id] = None if pixels is None else thumbnail_png(pixels, self.limits.side)
        return self.thumbs[image_id]

    def thumb_tag(self, image_id: str) -> str:
        return img_tag(self.thumb(image_id), image_id[:12]) or "<div class=missing>pixels not in the store</div>"

    def pixels(self, image_id: str) -> np.ndarray | None:
        try:
            return self.store.open(image_id)
        except PixelsRefused as e:  # the stage's firewall: no thumbnail, recorded with its reason
            self.unreadable.add(image_id, e.reason)
            return None


def run_settings(ws: Workspace, run_id: str) -> tuple[CurateConfig, bool]:
    path = ws.curation_dir / run_id / "settings.yaml"
    return (resolve_config(file=path), True) if path.is_file() else (CurateConfig(), False)


# Each image with the run's split and decisions (the `images` view's own columns follow the current run).
RUN_IMAGES = """CREATE TEMP VIEW run_images AS
    SELECT i.image_id, i.patient_key, i.modality, i.body_part, coalesce(sp.split, 'unassigned') AS split,
           (coalesce(NOT d.representative, false) OR q.image_id IS NOT NULL) AS excluded,
           l.image_id IS NOT NULL AS leaked
    FROM images i
    LEFT JOIN run_splits sp ON sp.patient_key = i.patient_key
    LEFT JOIN run_dups d ON d.image_id = i.image_id
    LEFT JOIN (SELECT DISTINCT image_id FROM run_quality WHERE excluding) q ON q.image_id = i.image_id
    LEFT JOIN run_leakage l ON l.image_id = i.image_id"""


# The catalog columns the cards show, of the images the run grouped or flagged only: read from `images` once.
RUN_META = """CREATE TEMP TABLE run_meta AS
    SELECT i.image_id, i.source, i.modality, i.body_part, i.laterality, i.series_key, i.image_kind, i.bits, i.rows,
           i.cols, coalesce(sp.split, 'unassigned') AS split
    FROM images i LEFT JOIN run_splits sp ON sp.patient_key = i.patient_key
    WHERE i.image_id IN (SELECT image_id FROM run_dups UNION SELECT image_id FROM run_quality)"""


# Per split, and per split, modality and body part: patients, images, excluded, held out; one pass over images.
SPLIT_COUNTS = """SELECT split, coalesce(modality, '?') || ' ' || coalesce(body_part, '?'), grouping(modality) = 1,
                         count(DISTINCT patient_key), count(*), count(*) FILTER (WHERE excluded),
                         count(*) FILTER (WHERE leaked)
                  FROM run_images GROUP BY GROUPING SETS ((split), (split, modality, body_part)) ORDER BY ALL"""
