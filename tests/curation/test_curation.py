"""Curation on the phantom and on edge cases: near-duplicates, splits, quality, leakage guard."""

import numpy as np
import pytest
from PIL import Image

from catalog import db
from curation.dedup.config import CropConfig, DedupConfig
from curation.dedup.signatures import signature
from curation.run import curate
from curation.splits import SplitPolicy, assign, hashed_split
from ingest.run import ingest_source
from ingest.sources import Source, add_source
from tests.dedup_reference import find_edges, groups, search


def q(ws, sql):
    return db.query(ws, sql)[1]


@pytest.fixture(scope="module")
def curated(phantom_workspace, tmp_path_factory):
    """A private copy of the phantom workspace, curated (other tests keep an uncurated one)."""
    import shutil

    from catalog.workspace import Workspace

    src, _ = phantom_workspace
    ws = Workspace.open(tmp_path_factory.mktemp("curated") / "ws")
    shutil.copytree(src.root, ws.root, dirs_exist_ok=True)
    return ws, curate(ws)


def test_rewindowed_and_cropped_8_bit_copies_are_grouped_with_their_originals(curated):
    ws, summary = curated
    rows = q(ws, """SELECT dup_group, list(source ORDER BY source), list(bits ORDER BY bits),
                           list(dup_representative ORDER BY bits), list(DISTINCT d.method)
                    FROM images JOIN dup_groups d USING (image_id, dup_group) GROUP BY dup_group""")
    # patient 1's two knees re-windowed to 8 bits in the public tree, patient 3's cropped and resized
    assert sorted(r[4] for r in rows) == [["crop"], ["crop"], ["embedding"], ["embedding"]]
    for _, sources, bits, representative, _ in rows:
        assert sources == ["pacs", "public"] and bits == [8, 16]
        assert representative == [False, True]  # the 16-bit original represents the group
    assert summary.near_duplicates == 4 and summary.matched_by == {"crop": 4, "embedding": 4}
    assert summary.crop_search["verified"] == 2
    similarity = q(ws, "SELECT min(similarity) FROM dup_groups WHERE method = 'crop'")[0][0]
    assert similarity > CropConfig().threshold + 0.2


def test_no_different_knees_grouped(curated):
    ws, _ = curated
    assert q(ws, """SELECT count(*) FROM (SELECT dup_group FROM images WHERE dup_group IS NOT NULL
                    GROUP BY dup_group HAVING count(DISTINCT laterality) > 1)""")[0][0] == 0


def test_no_patient_in_two_splits_and_declared_splits_honoured(curated):
    ws, _ = curated
    assert q(ws, "SELECT count(*) FROM (SELECT patient_key FROM images GROUP BY 1 HAVING count(DISTINCT split) > 1)")[0][0] == 0
    assert q(ws, "SELECT count(*) FROM images WHERE split IS NULL")[0][0] == 0
    mismatched = q(ws, "SELECT count(*) FROM images WHERE source_split IS NOT NULL AND split <> source_split")[0][0]
    assert mismatched == 0


def test_splits_are_stable_when_patients_arrive(curated, tmp_path):
    ws, _ = curated
    before = dict(q(ws, "SELECT patient_key, split FROM splits"))
    src = tmp_path / "new"
    src.mkdir()
    for i in range(5):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (80, 80), dtype=np.uint8)).save(src / f"{i}.png")
    add_source(ws, Source("late", str(src), "public", path_pattern=r"(?P<patient>\d+)\.png", body_part="knee"))
    ingest_source(ws, "late")
    summary = curate(ws)
    after = dict(q(ws, "SELECT patient_key, split FROM splits"))
    assert summary.new_patients == 5 and summary.new_signatures == 5
    assert {k: after[k] for k in before} == before
    # only the new images asked the saved near-duplicate searches (curation/dedup/incremental.py)
    assert summary.search["mode"] == "incremental" and summary.search["queried"] == 5


def test_hashed_split_follows_ratios_and_declared_wins():
    policy = SplitPolicy()
    counts = {"train": 0, "val": 0, "test": 0}
    for i in range(20000):
        counts[hashed_split(f"p{i}", policy)] += 1
    assert abs(counts["train"] / 20000 - 0.8) < 0.015 and abs(counts["test"] / 20000 - 0.1) < 0.01
    assert assign("x", {"train", "val"}, policy) == ("val", "declared")
    assert assign("x", set(), policy)[1] == "hashed"


def test_leakage_guard_holds_out_training_copies_of_evaluation_images(curated):
    ws, _ = curated
    leaks = q(ws, """SELECT i.image_id, i.split, l.reason FROM leakage l JOIN images i USING (image_id)""")
    for _, split, reason in leaks:
        assert split == "train" and reason in ("exact_duplicate_of_eval", "near_duplicate_of_eval")
    eval_groups = q(ws, """SELECT count(*) FROM images a JOIN images b ON a.dup_group = b.dup_group
                           WHERE a.split = 'train' AND b.split IN ('val', 'test') AND NOT a.held_out""")[0][0]
    assert eval_groups == 0
    assert q(ws, "SELECT count(*) FROM images WHERE split IN ('val', 'test') AND NOT held_out")[0][0] == 0


def test_the_summary_separates_held_out_by_design_from_the_leakage_guard(curated):
    """Before: "held out by the leakage guard" counted every val/test image too (1,062 where the guard removed 1)."""
    ws, _ = curated
    summary = curate(ws)  # the fixture's own summary is stale once another test of this module added images
    by_design = q(ws, "SELECT count(*) FROM images WHERE split IN ('val', 'test')")[0][0]
    guarded = q(ws, "SELECT count(DISTINCT image_id) FROM leakage")[0][0]
    assert summary.held_out_by_design == by_design > 0
    assert summary.leakage_removed == guarded < by_design
    assert q(ws, "SELECT count(*) FROM images WHERE held_out")[0][0] == by_design + guarded


def test_quality_flags_carry_reasons(ws, tmp_path):
    src = tmp_path / "q"
    src.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(np.full((128, 128), 77, np.uint8)).save(src / "blank.png")
    Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8)).save(src / "tiny.png")
    Image.fromarray(rng.integers(0, 255, (64, 600), dtype=np.uint8)).save(src / "strip.png")
    sat = rng.integers(0, 255, (128, 128), dtype=np.uint8)
    sat[:80] = 255
    Image.fromarray(sat).save(src / "saturated.png")
    Image.fromarray(rng.integers(0, 255, (128, 128), dtype=np.uint8)).save(src / "fine.png")
    add_source(ws, Source("q", str(src), "public", body_part="knee"))
    ingest_source(ws, "q")
    curate(ws)
    flags = {(r, e) for r, e in q(ws, "SELECT reason, excluding FROM quality")}
    assert flags == {("blank_image", True), ("too_small", True), ("extreme_aspect", True), ("saturated", False)}
    assert q(ws, "SELECT count(*) FROM images WHERE NOT excluded")[0][0] == 2


def test_empty_catalog_and_single_image(ws, tmp_path):
    s = curate(ws)
    assert s.images == 0 and s.dup_groups == 0
    src = tmp_path / "one"
    src.mkdir()
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(src / "a.png")
    add_source(ws, Source("one", str(src), "public"))
    ingest_source(ws, "one")
    s = curate(ws)
    assert s.images == 1 and s.dup_groups == 0
    assert {r for (r,) in q(ws, "SELECT reason FROM quality")} >= {"too_small", "blank_image"}


def test_exact_and_ivf_search_agree():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((3000, 256)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    noisy = base[:50] + 0.04 * rng.standard_normal((50, 256)).astype(np.float32)
    emb = np.vstack([base, noisy / np.linalg.norm(noisy, axis=1, keepdims=True)]).astype(np.float16)
    exact = {(i, j) for i, j, _ in search(emb, emb, 0.66, DedupConfig(exact_below=10**9))}
    ivf = {(i, j) for i, j, _ in search(emb, emb, 0.66, DedupConfig(exact_below=0))}
    assert len(exact) == 100 and len(ivf & exact) >= 0.95 * len(exact) and ivf <= exact


def test_flip_matches_only_with_consistent_laterality():
    rng = np.random.default_rng(3)
    img = rng.integers(0, 4096, (128, 128), dtype=np.uint16)
    e1, f1 = signature(img)
    e2, f2 = signature(img[:, ::-1].copy())
    emb, flip = np.stack([e1, e2]), np.stack([f1, f2])
    assert [(e.method) for e in find_edges(emb, flip, [None, None], [None, None], DedupConfig())] == ["embedding_flip"]
    assert find_edges(emb, flip, ["L", "R"], [None, None], DedupConfig()) == []
    assert list(groups(2, find_edges(emb, flip, ["L", "L"], [None, None], DedupConfig()))) == [0, 0]


def test_tasks_list_counts_per_split_and_class(curated):
    import json

    from typer.testing import CliRunner

    from flows.cli import app

    ws, _ = curated
    out = json.loads(CliRunner().invoke(app, ["tasks", "list", "--json", "--workspace", str(ws.root)]).output)
    assert out["kl_grade"]["spec"]["kind"] == "ordinal" and out["mri_acl"]["spec"]["level"] == "exam"
    total = sum(n for split in out["kl_grade"]["counts"].values() for n in split.values())
    assert total == q(ws, "SELECT count(DISTINCT image_id) FROM labels WHERE task = 'kl_grade'")[0][0]
    assert set(out["kl_grade"]["counts"]) <= {"train", "val", "test"}


def test_streamed_dup_graph_equals_all_pairs_and_stays_small_for_long_near_identical_runs():
    from curation.dedup.search import dup_graph

    rng = np.random.default_rng(3)
    base = rng.normal(size=(40, 256)).astype(np.float32)
    # 40 distinct images, 30 near-copies of a few of them, one flipped copy, L/R knees and a series
    emb = np.concatenate([base, base[:30] + rng.normal(0, 0.25, (30, 256)).astype(np.float32)])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    flip = emb[:, ::-1].copy()
    flip[5] = emb[60]  # image 5's mirror matches image 60
    lat = ["L" if i % 7 == 0 else ("R" if i % 7 == 1 else None) for i in range(len(emb))]
    series = ["s1" if 10 <= i < 14 else None for i in range(len(emb))]
    cfg = DedupConfig()
    edges = find_edges(emb.astype(np.float16), flip.astype(np.float16), lat, series, cfg)
    graph = dup_graph(emb.astype(np.float16), flip.astype(np.float16), lat, series, cfg)
    assert list(graph.group) == list(groups(len(emb), edges))
    best = {}
    for e in edges:
        for x, o in ((e.a, e.b), (e.b, e.a)):
            if x not in best or e.similarity > best[x][1]:
                best[x] = (o, e.similarity)
    assert {i: int(graph.best_other[i]) for i in best} == {i: o for i, (o, _) in best.items()}
    assert all(graph.best_other[i] == -1 for i in range(len(emb)) if i not in best)
    assert len(edges) > 20
    # 3,000 copies of one image (a pathological export): pairs ~ 4.5 million, state stays O(N)
    many = np.repeat(emb[:1], 3000, axis=0) + rng.normal(0, 0.01, (3000, 256)).astype(np.float32)
    many /= np.linalg.norm(many, axis=1, keepdims=True)
    g = dup_graph(many.astype(np.float16), many[:, ::-1].astype(np.float16), [None] * 3000, [None] * 3000,
                  DedupConfig(use_flip=False))
    assert set(g.group.tolist()) == {0} and g.pairs == 3000 * 2999 // 2 and (g.best_other >= 0).all()
