"""`ortho curate` as a plain function: signatures for new images, then splits, near-duplicate
groups, quality flags and the leakage guard over the whole catalog.

Incremental: signatures and splits are computed once per image / patient and appended; the
near-duplicate searches are saved (catalog/curation-index/) and each run queries only the new images
against everything, folding what it finds into the saved groups (curation/dedup/incremental.py; a full run
when asked, or when the saved state cannot be extended). Quality flags and the leakage guard are SQL
over the whole catalog. The results are published as one folder per run, catalog/curation/<run_id>/,
renamed into place when complete, with the run's resolved settings (settings.yaml: CurateConfig,
resolved by resolve_config) beside its tables.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import pyarrow as pa

from catalog import config as loader
from catalog import db
from catalog.ids import new_run_id, token
from catalog.parts import write_table
from catalog.publish import publish
from catalog.schema import DUPS, KEYPOINTS, LEAKAGE, QUALITY, SIGNATURE, SPLIT
from catalog.pixel_budget import PixelsRefused
from catalog.store import ImageStore
from catalog.unreadable import CURATION_UNREADABLE, Unreadable
from catalog.workspace import Workspace, clear_staging
from curation import semdedup
from curation.dedup import keypoints
from curation.dedup.config import DedupConfig
from curation.dedup.incremental import search_run
from curation.dedup.signatures import SIGNATURE_VERSION, pixel_stats, signature
from curation.quality import QualityConfig
from curation.semdedup import SemDedupConfig
from curation.splits import SplitPolicy, assign

log = logging.getLogger("ortho.curate")
# the quality reason of an image curation could not open (catalog/unreadable.py): always excluding
UNREADABLE_REASON = "unreadable_pixels"


@dataclass
class CurateConfig:
    dedup: DedupConfig = field(default_factory=DedupConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    splits: SplitPolicy = field(default_factory=SplitPolicy)
    semdedup: SemDedupConfig = field(default_factory=SemDedupConfig)
    batch_size: int = 512


def resolve_config(overrides: Iterable[str] = (), file: str | os.PathLike | None = None,
                   settings: dict | None = None, base: CurateConfig | None = None) -> CurateConfig:
    """CurateConfig defaults (or `base`) <- `file` (YAML) <- `settings` (plain values, e.g. a pipeline file's) <-
    `key=value` overrides (`dedup.threshold=0.7`, `dedup.crops.enabled=false`, `quality.min_size=128`).
    Raises catalog.config.ConfigError for an unknown key or a value of the wrong type."""
    cfg = loader.load(CurateConfig, [file] if file else [], overrides, layers=[settings] if settings else [],
                      base=base)
    try:
        cfg.quality.conditions()  # an unknown filter name fails here, not halfway through a run
    except ValueError as e:
        raise loader.ConfigError(f"config section 'quality': {e}") from None
    return cfg


@dataclass
class CurateSummary:
    run_id: str
    images: int = 0
    new_signatures: int = 0
    new_patients: int = 0
    dup_groups: int = 0
    near_duplicates: int = 0
    matched_by: dict = field(default_factory=dict)  # method -> images whose recorded match it found
    crop_search: dict = field(default_factory=dict)  # candidates at each stage of the crop search
    # how the near-duplicate search ran: mode (full | incremental), reason (why full), queried (images searched
    # against the catalog), indexed (images in the searches), seconds per step
    search: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)  # wall time per step: signatures, splits, groups, flags, publish, ...
    quality: dict = field(default_factory=dict)
    excluded: int = 0
    leakage_removed: int = 0  # training-split images the leakage guard holds out (a near-copy in val/test)
    held_out_by_design: int = 0  # val/test images: never in a training selection, by their split
    splits: dict = field(default_factory=dict)


def signature_rows(ws: Workspace, rows: list[tuple], unreadable: Unreadable | None = None) -> tuple[list[dict], list[dict]]:
    """Signature rows and keypoint rows for (image_id, bits, needs a signature, needs keypoints, rows, cols),
    reading each image once. An image the store cannot give within the pixel budget is left out and recorded in
    `unreadable` (the stage's firewall: curation goes on, the image is flagged)."""
    store = ImageStore(ws.store_dir)
    sigs, kps = [], []
    for image_id, bits, need_sig, need_kp, *shape in rows:
        try:
            pixels = store.open(image_id, *shape)
        except PixelsRefused as e:
            if unreadable is not None:
                unreadable.add(image_id, e.reason)
            continue
        if need_sig:
            emb, flip = signature(pixels)
            sigs.append({"image_id": image_id, "emb": emb.tobytes(), "emb_flip": flip.tobytes(),
                         **pixel_stats(pixels, bits)})
        if need_kp:
            kp, desc = keypoints.features(pixels)
            kps.append({"image_id": image_id, "n": len(kp), "kp": kp.tobytes(), "desc": desc.tobytes()})
    return sigs, kps


def write_signature_part(ws: Workspace, part: str, rows: list[tuple]) -> int:
    """Computes and writes one batch; each table is written whole or not at all (a killed run
    recomputes what is missing)."""
    unreadable = Unreadable("curate", part)
    sigs, kps = signature_rows(ws, rows, unreadable)
    if sigs:
        write_table(ws.signatures_dir / f"{part}.parquet", sigs, SIGNATURE, ws.staging_dir)
    if kps:
        write_table(ws.keypoints_dir / f"{part}.parquet", kps, KEYPOINTS, ws.staging_dir)
    unreadable.save(ws)
    return len(rows)


def serial_signatures(ws: Workspace, batches: Iterable[list[tuple]]) -> Iterator[int]:
    prefix = new_run_id()
    for i, batch in enumerate(batches):
        yield write_signature_part(ws, f"{prefix}-{i:06d}", batch)


def retire_stale(folder: Path, version: int, staging: Path) -> bool:
    """Per-image results in `folder` of another algorithm version (none recorded: version 1) are moved aside,
    then deleted, so that this run computes them again; True when there were any. Kill-safe: the version is
    recorded only once the old files are out of the way, and a run that finds no record moves aside whatever
    is there."""
    marker = folder / "VERSION"
    try:
        if marker.read_text().strip() == str(version):
            return False
    except FileNotFoundError:
        pass
    had = any(folder.glob("*.parquet"))
    trash = staging / f"{folder.name}-retired-{token(3)}"
    if folder.exists():
        os.rename(folder, trash)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = staging / f"{folder.name}-version-{token(3)}"
    tmp.write_text(f"{version}\n")
    os.replace(tmp, marker)
    shutil.rmtree(trash, ignore_errors=True)
    return had


def retire_stale_keypoints(ws: Workspace) -> bool:
    return retire_stale(ws.keypoints_dir, keypoints.FEATURES_VERSION, ws.staging_dir)


def retire_stale_signatures(ws: Workspace) -> bool:
    return retire_stale(ws.signatures_dir, SIGNATURE_VERSION, ws.staging_dir)


def _missing_signatures(con, batch_size: int, keypoints: bool) -> list[list[tuple]]:
    rows = con.execute("""SELECT image_id, bits, need_sig, need_kp AND $kp, rows, cols FROM (
                              SELECT image_id, bits, rows, cols, image_id NOT IN (SELECT image_id FROM signatures) AS need_sig,
                                     image_id NOT IN (SELECT image_id FROM keypoints) AS need_kp FROM images)
                          WHERE need_sig OR (need_kp AND $kp) ORDER BY image_id""", {"kp": keypoints}).fetchall()
    return [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]


def _new_splits(con, policy: SplitPolicy, run_id: str) -> list[dict]:
    patients = con.execute("""SELECT o.patient_key, list(DISTINCT o.source_split) FILTER (WHERE o.source_split IS NOT NULL)
                              FROM occurrences o WHERE o.patient_key IS NOT NULL
                                AND o.patient_key NOT IN (SELECT patient_key FROM splits)
                              GROUP BY o.patient_key ORDER BY o.patient_key""").fetchall()
    out = []
    for key, declared in patients:
        split, basis = assign(key, set(declared or []), policy)
        out.append({"patient_key": key, "split": split, "basis": basis, "run_id": run_id})
    return out


def _leakage_rows(con) -> list[dict]:
    """Training images that share pixels (any occurrence) or a near-duplicate group with an
    evaluation image. Evaluation patients' own images are held out by their split."""
    return [{"image_id": i, "reason": r} for i, r in con.execute("""
        WITH eval_images AS (
            SELECT DISTINCT o.image_id FROM occurrences o JOIN splits s USING (patient_key) WHERE s.split IN ('val', 'test')),
        train_images AS (
            SELECT i.image_id FROM images i JOIN splits s USING (patient_key) WHERE s.split = 'train'),
        exact AS (SELECT image_id, 'exact_duplicate_of_eval' AS reason FROM train_images WHERE image_id IN (SELECT image_id FROM eval_images)),
        near AS (SELECT d.image_id, 'near_duplicate_of_eval' AS reason FROM staged_dups d
                 JOIN staged_dups e ON d.dup_group = e.dup_group AND e.image_id IN (SELECT image_id FROM eval_images)
                 WHERE d.image_id IN (SELECT image_id FROM train_images))
        SELECT image_id, min(reason) FROM (SELECT * FROM exact UNION ALL SELECT * FROM near) GROUP BY image_id ORDER BY image_id
    """).fetchall()]


def curate(ws: Workspace, config: CurateConfig | None = None,
           map_signatures: Callable[[Workspace, Iterable[list]], Iterator[int]] = serial_signatures,
           on_progress: Callable[[str, int, int], None] | None = None, wait_s: float = 0.0,
           full: bool = False) -> CurateSummary:
    """`full`: search every image against every image and rebuild the saved searches, even where the new images
    alone could be queried (curation/dedup/incremental.py)."""
    config = config or CurateConfig()
    with ws.write_lock(wait_s):
        clear_staging(ws)
        if retire_stale_signatures(ws):
            log.info("signatures of an older version retired: computed again in this run")
        if config.dedup.crops.enabled and retire_stale_keypoints(ws):
            log.info("keypoints of an older version retired: computed again in this run")
        run_id = new_run_id()
        summary = CurateSummary(run_id)
        lap = _stopwatch(summary.seconds)
        with db.connection(ws) as con:
            summary.images = con.execute("SELECT count(*) FROM images").fetchall()[0][0]
            batches = _missing_signatures(con, config.batch_size, config.dedup.crops.enabled)
        total = sum(len(b) for b in batches)
        for n in map_signatures(ws, batches):
            summary.new_signatures += n
            if on_progress:
                on_progress("signatures", summary.new_signatures, total)
        lap("signatures")
        with db.connection(ws) as con:
            new = _new_splits(con, config.splits, run_id)
            if new:
                write_table(ws.splits_dir / f"{run_id}.parquet", new, SPLIT, ws.staging_dir)
            summary.new_patients = len(new)
        lap("splits")
        with db.connection(ws) as con:
            searched = search_run(con, ws, config.dedup, run_id, full)
            dups = searched.groups.rows(con) if searched is not None else []
            if searched is not None:
                summary.crop_search = searched.crop_search
                summary.search = {"mode": searched.mode, "reason": searched.reason, "queried": searched.queried,
                                  "indexed": len(searched.groups.ids),
                                  **{k: round(v, 3) for k, v in searched.timings.items()}}
            lap("groups")
            con.register("staged_dups", pa.Table.from_pylist(dups, schema=DUPS))
            leakage = _leakage_rows(con)
            quality = _quality_rows(ws, con, config, summary.images)
        lap("flags")
        _publish_results(ws, run_id, {"dups": (dups, DUPS), "quality": (quality, QUALITY), "leakage": (leakage, LEAKAGE)},
                 config)
        lap("results")
        publish(ws)
        lap("catalog_publish")
        with db.connection(ws) as con:
            _count_results(con, summary)
        lap("summary")
    log.info("curated %d images: %d new signatures, %d new patients, %d near-duplicates in %d groups, %d excluded, "
             "%d held out by the leakage guard, %d val/test", summary.images, summary.new_signatures, summary.new_patients,
             summary.near_duplicates, summary.dup_groups, summary.excluded, summary.leakage_removed,
             summary.held_out_by_design)
    return summary


def _quality_rows(ws: Workspace, con, config: CurateConfig, images: int) -> list[dict]:
    """Every quality flag: the named queries, images curation could not open, semantic duplicates."""
    excluding = set(config.quality.exclude)
    queries = {**config.quality.queries(), UNREADABLE_REASON: CURATION_UNREADABLE} if images else {}
    quality = sorted(({"image_id": i, "reason": reason, "excluding": reason in excluding or
                       reason == UNREADABLE_REASON}
                      for reason, sql in queries.items()
                      for (i,) in con.execute(sql).fetchall()), key=lambda r: (r["image_id"], r["reason"]))
    return sorted(quality + semdedup.quality_rows(ws, config.semdedup, con), key=lambda r: (r["image_id"], r["reason"]))


def _count_results(con, summary: CurateSummary) -> None:
    """The published catalog's counts into `summary`."""
    summary.dup_groups = con.execute("SELECT count(DISTINCT dup_group) FROM dup_groups").fetchall()[0][0]
    summary.near_duplicates = con.execute("SELECT count(*) FROM dup_groups WHERE NOT representative").fetchall()[0][0]
    summary.matched_by = dict(con.execute("SELECT method, count(*) FROM dup_groups GROUP BY ALL ORDER BY ALL").fetchall())
    summary.quality = dict(con.execute("SELECT reason, count(*) FROM quality GROUP BY ALL ORDER BY ALL").fetchall())
    summary.excluded = con.execute("SELECT count(*) FROM images WHERE excluded").fetchall()[0][0]
    summary.held_out_by_design, summary.leakage_removed = con.execute(
        "SELECT count(*) FILTER (WHERE split IN ('val', 'test')), "
        "count(*) FILTER (WHERE held_out AND coalesce(split NOT IN ('val', 'test'), true)) FROM images"
    ).fetchall()[0]
    summary.splits = dict(con.execute("SELECT split, count(*) FROM images GROUP BY ALL ORDER BY ALL").fetchall())


def _stopwatch(seconds: dict) -> Callable[[str], None]:
    """lap(step): the seconds since the previous lap, recorded as `step`."""
    last = [time.perf_counter()]

    def lap(step: str) -> None:
        now = time.perf_counter()
        seconds[step] = round(now - last[0], 3)
        last[0] = now

    return lap


def _publish_results(ws: Workspace, run_id: str, tables: dict, settings: CurateConfig) -> None:
    staging = ws.staging_dir / f"curation-{run_id}-{token(3)}"
    staging.mkdir(parents=True)
    for name, (rows, schema) in tables.items():
        write_table(staging / f"{name}.parquet", rows, schema)
    loader.save_resolved(settings, staging / "settings.yaml")  # renamed into place with the tables
    ws.curation_dir.mkdir(parents=True, exist_ok=True)
    os.rename(staging, ws.curation_dir / run_id)
    for old in sorted(p for p in ws.curation_dir.iterdir() if p.name < run_id)[:-2]:
        shutil.rmtree(old, ignore_errors=True)  # keep the last few for comparison; the newest is current
