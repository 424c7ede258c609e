"""`ortho curate` as a plain function: signatures for new images, then splits, near-duplicate
groups, quality flags and the leakage guard over the whole catalog.

Incremental: signatures and splits are computed once per image / patient and appended;
grouping and flags are recomputed over everything (cheap next to signatures) and published as
one folder per run, catalog/curation/<run_id>/, renamed into place when complete, with the run's resolved
settings (settings.yaml: CurateConfig, resolved by resolve_config) beside its tables.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa

from catalog import config as loader
from catalog import db
from catalog.ids import new_run_id, token
from catalog.parts import write_table
from catalog.schema import DUPS, KEYPOINTS, LEAKAGE, QUALITY, SIGNATURE, SPLIT
from catalog.store import ImageStore
from catalog.workspace import Workspace, clear_staging
from curation import crops, near_dup
from curation.quality import QualityConfig
from curation.signatures import DIM, pixel_stats, signature
from curation.splits import SplitPolicy, assign

log = logging.getLogger("ortho.curate")


@dataclass
class CurateConfig:
    dedup: near_dup.DedupConfig = field(default_factory=near_dup.DedupConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    splits: SplitPolicy = field(default_factory=SplitPolicy)
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
    quality: dict = field(default_factory=dict)
    excluded: int = 0
    leakage_removed: int = 0
    splits: dict = field(default_factory=dict)


def signature_rows(ws: Workspace, rows: list[tuple[str, int, bool, bool]]) -> tuple[list[dict], list[dict]]:
    """Signature rows and keypoint rows for (image_id, bits, needs a signature, needs keypoints),
    reading each image once."""
    store = ImageStore(ws.store_dir)
    sigs, kps = [], []
    for image_id, bits, need_sig, need_kp in rows:
        pixels = store.get(image_id)
        if need_sig:
            emb, flip = signature(pixels)
            sigs.append({"image_id": image_id, "emb": emb.tobytes(), "emb_flip": flip.tobytes(),
                         **pixel_stats(pixels, bits)})
        if need_kp:
            kp, desc = crops.features(pixels)
            kps.append({"image_id": image_id, "n": len(kp), "kp": kp.tobytes(), "desc": desc.tobytes()})
    return sigs, kps


def write_signature_part(ws: Workspace, part: str, rows: list[tuple[str, int, bool, bool]]) -> int:
    """Computes and writes one batch; each table is written whole or not at all (a killed run
    recomputes what is missing)."""
    sigs, kps = signature_rows(ws, rows)
    if sigs:
        write_table(ws.signatures_dir / f"{part}.parquet", sigs, SIGNATURE, ws.staging_dir)
    if kps:
        write_table(ws.keypoints_dir / f"{part}.parquet", kps, KEYPOINTS, ws.staging_dir)
    return len(rows)


def serial_signatures(ws: Workspace, batches: Iterable[list[tuple[str, int, bool, bool]]]) -> Iterator[int]:
    prefix = new_run_id()
    for i, batch in enumerate(batches):
        yield write_signature_part(ws, f"{prefix}-{i:06d}", batch)


def _missing_signatures(con, batch_size: int, keypoints: bool) -> list[list[tuple[str, int, bool, bool]]]:
    rows = con.execute("""SELECT image_id, bits, need_sig, need_kp AND $kp FROM (
                              SELECT image_id, bits, image_id NOT IN (SELECT image_id FROM signatures) AS need_sig,
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


def _dup_rows(con, ws: Workspace, cfg: near_dup.DedupConfig) -> tuple[list[dict], dict]:
    """dup_groups rows for every grouped image, and the crop search's counts."""
    rows = con.execute("""SELECT i.image_id, i.laterality, i.series_key, i.bits, i.rows * i.cols, i.source_seq, s.emb, s.emb_flip
                          FROM images i JOIN signatures s USING (image_id) ORDER BY i.image_id""").fetchall()
    if not rows:
        return [], {}
    ids = [r[0] for r in rows]
    emb = np.frombuffer(b"".join(r[6] for r in rows), dtype=np.float16).reshape(len(rows), DIM)
    flip = np.frombuffer(b"".join(r[7] for r in rows), dtype=np.float16).reshape(len(rows), DIM)
    laterality, series = [r[1] for r in rows], [r[2] for r in rows]
    graph = near_dup.dup_graph(emb, flip, laterality, series, cfg)
    crop_search = _crop_pass(ws, ids, graph, cfg) if cfg.crops.enabled else {}
    members: dict[int, list[int]] = {}
    for i, g in enumerate(graph.group):
        members.setdefault(int(g), []).append(i)
    out = []
    for g, idx in members.items():
        if len(idx) < 2:
            continue
        # Representative: highest bit depth, then most pixels, then earliest source, then id.
        rep = min(idx, key=lambda i: (-rows[i][3], -rows[i][4], rows[i][5], ids[i]))
        for i in idx:
            out.append({"image_id": ids[i], "dup_group": ids[g], "representative": i == rep, "group_size": len(idx),
                        "matched_image_id": ids[int(graph.best_other[i])],
                        "method": near_dup.METHODS[int(graph.best_method[i])],
                        "similarity": float(graph.best_similarity[i])})
    return out, crop_search


def _binary_column(table: pa.Table, name: str) -> np.ndarray:
    """A binary column's values end to end as one uint8 array (nulls are empty), without a Python
    object per row."""
    col = table.column(name).combine_chunks()
    if len(col) == 0:
        return np.zeros(0, np.uint8)
    offsets = np.frombuffer(col.buffers()[1], dtype=np.int32)[col.offset : col.offset + len(col) + 1]
    data = col.buffers()[2]
    return np.frombuffer(data, dtype=np.uint8)[offsets[0] : offsets[-1]] if data is not None else np.zeros(0, np.uint8)


def _crop_pass(ws: Workspace, ids: list[str], graph: near_dup.DupGraph, cfg: near_dup.DedupConfig) -> dict:
    """Cropped re-exports (curation/crops.py) among images the global signature left apart; their
    verified pairs join the groups."""
    # its own connection: the caller's keeps its whole memory budget for what follows
    with db.connection(ws) as con:
        reader = con.sql("""SELECT i.image_id, i.rows::BIGINT AS rows, i.cols::BIGINT AS cols,
                                   coalesce(k.n, 0)::BIGINT AS n, k.kp, k.desc
                            FROM images i JOIN signatures s USING (image_id) LEFT JOIN keypoints k USING (image_id)
                            ORDER BY i.image_id""").to_arrow_reader(65536)
        got, shapes, sizes, kp, desc = [], [], [], [], []
        for batch in reader:  # copied out batch by batch
            table = pa.Table.from_batches([batch])
            got += table.column("image_id").to_pylist()
            shapes.append(np.stack([table.column("rows").to_numpy(), table.column("cols").to_numpy()], axis=1))
            sizes.append(table.column("n").to_numpy().copy())
            kp.append(_binary_column(table, "kp").copy())
            desc.append(_binary_column(table, "desc").copy())
    if got != ids:
        raise RuntimeError("signatures and keypoints read in different orders")
    sizes = np.concatenate(sizes)
    kp = np.concatenate(kp).view(np.float32).reshape(-1, 4)
    desc = np.concatenate(desc).reshape(-1, crops.DESC)
    store = ImageStore(ws.store_dir)
    edges, counts = crops.crop_edges(kp, desc, sizes, graph.apart_from_crop, lambda i: store.get(ids[i]), cfg.crops,
                                     shapes=np.concatenate(shapes))
    graph.add_edges([(e.a, e.b, e.similarity) for e in edges], method=near_dup.METHODS.index("crop"))
    return counts


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
           on_progress: Callable[[str, int, int], None] | None = None, wait_s: float = 0.0) -> CurateSummary:
    config = config or CurateConfig()
    with ws.write_lock(wait_s):
        clear_staging(ws)
        run_id = new_run_id()
        summary = CurateSummary(run_id)
        with db.connection(ws) as con:
            summary.images = con.execute("SELECT count(*) FROM images").fetchall()[0][0]
            batches = _missing_signatures(con, config.batch_size, config.dedup.crops.enabled)
        total = sum(len(b) for b in batches)
        for n in map_signatures(ws, batches):
            summary.new_signatures += n
            if on_progress:
                on_progress("signatures", summary.new_signatures, total)
        with db.connection(ws) as con:
            new = _new_splits(con, config.splits, run_id)
            if new:
                write_table(ws.splits_dir / f"{run_id}.parquet", new, SPLIT, ws.staging_dir)
            summary.new_patients = len(new)
        with db.connection(ws) as con:
            dups, summary.crop_search = _dup_rows(con, ws, config.dedup)
            con.register("staged_dups", pa.Table.from_pylist(dups, schema=DUPS))
            leakage = _leakage_rows(con)
            excluding = set(config.quality.exclude)
            quality = sorted(({"image_id": i, "reason": reason, "excluding": reason in excluding}
                              for reason, sql in (config.quality.queries().items() if summary.images else [])
                              for (i,) in con.execute(sql).fetchall()), key=lambda r: (r["image_id"], r["reason"]))
        _publish(ws, run_id, {"dups": (dups, DUPS), "quality": (quality, QUALITY), "leakage": (leakage, LEAKAGE)},
                 config)
        db.publish(ws)
        with db.connection(ws) as con:
            summary.dup_groups = con.execute("SELECT count(DISTINCT dup_group) FROM dup_groups").fetchall()[0][0]
            summary.near_duplicates = con.execute("SELECT count(*) FROM dup_groups WHERE NOT representative").fetchall()[0][0]
            summary.matched_by = dict(con.execute("SELECT method, count(*) FROM dup_groups GROUP BY ALL ORDER BY ALL").fetchall())
            summary.quality = dict(con.execute("SELECT reason, count(*) FROM quality GROUP BY ALL ORDER BY ALL").fetchall())
            summary.excluded = con.execute("SELECT count(*) FROM images WHERE excluded").fetchall()[0][0]
            summary.leakage_removed = con.execute("SELECT count(*) FROM images WHERE held_out").fetchall()[0][0]
            summary.splits = dict(con.execute("SELECT split, count(*) FROM images GROUP BY ALL ORDER BY ALL").fetchall())
    log.info("curated %d images: %d new signatures, %d new patients, %d near-duplicates in %d groups, %d excluded, "
             "%d held out by the leakage guard", summary.images, summary.new_signatures, summary.new_patients,
             summary.near_duplicates, summary.dup_groups, summary.excluded, summary.leakage_removed)
    return summary


def _publish(ws: Workspace, run_id: str, tables: dict, settings: CurateConfig) -> None:
    staging = ws.staging_dir / f"curation-{run_id}-{token(3)}"
    staging.mkdir(parents=True)
    for name, (rows, schema) in tables.items():
        write_table(staging / f"{name}.parquet", rows, schema)
    loader.save_resolved(settings, staging / "settings.yaml")  # renamed into place with the tables
    ws.curation_dir.mkdir(parents=True, exist_ok=True)
    os.rename(staging, ws.curation_dir / run_id)
    for old in sorted(p for p in ws.curation_dir.iterdir() if p.name < run_id)[:-2]:
        shutil.rmtree(old, ignore_errors=True)  # keep the last few for comparison; the newest is current
