"""Embeddings as catalog facts (ortho embed), their hierarchical clusters, balanced shard draws over them, more like
this, and SemDeDup: on the bars workspace (80 images) with a planted near-copy ingested later."""

import shutil

import numpy as np
import pytest
from PIL import Image

from catalog import db
from catalog.files import file_sha256
from catalog.store import ImageStore
from catalog.workspace import Workspace
from curation.clusters import ClusterConfig, cluster_embeddings
from curation.similar import more_like, update_index
from evaluation.catalog_embed import EmbedConfig, embed_catalog
from shards.spec import ShardSetSpec
from shards.writer import build_shard_set


def _plant_copy(ws: Workspace, tmp_path, image_id: str) -> str:
    """A near-copy of image_id (darker by 8%, faint noise) ingested as a new source; returns its image id."""
    from ingest.run import ingest_source
    from ingest.sources import Source, add_source

    pixels = ImageStore(ws.store_dir).get(image_id).astype(np.float32)
    rng = np.random.default_rng(1)
    copy = (pixels * 0.92 + rng.normal(0, 1.0, pixels.shape)).clip(0, 255).astype(np.uint8)
    folder = tmp_path / "copies"
    folder.mkdir()
    Image.fromarray(copy).save(folder / "copy.png")
    add_source(ws, Source("copies", str(folder), "internal", modality="DX", body_part="knee"))
    ingest_source(ws, "copies")
    return db.query(ws, "SELECT image_id FROM images WHERE source = 'copies'")[1][0][0]


@pytest.fixture(scope="module")
def embedded(bars_workspace, pico_checkpoint, tmp_path_factory):
    """The bars workspace embedded once, then a near-copy planted and embedded incrementally."""
    tmp = tmp_path_factory.mktemp("embedded")
    ws = Workspace.open(tmp / "workspace")
    shutil.copytree(bars_workspace.root, ws.root, dirs_exist_ok=True)
    cfg = EmbedConfig(str(pico_checkpoint), pool="mean", batch_size=16, part_size=32)
    first = embed_catalog(ws, cfg)
    again = embed_catalog(ws, cfg)
    original = db.query(ws, "SELECT image_id FROM images ORDER BY image_id LIMIT 1 OFFSET 7")[1][0][0]
    copy = _plant_copy(ws, tmp, original)
    third = embed_catalog(ws, cfg)
    return ws, cfg, (first, again, third), original, copy


def test_embedding_is_incremental_and_recorded_with_the_models_sha256(embedded, pico_checkpoint):
    ws, _, (first, again, third), _, copy = embedded
    assert (first.selected, first.already, first.embedded) == (80, 0, 80)
    assert (again.already, again.embedded) == (80, 0)  # a second run adds nothing
    assert (third.selected, third.already, third.embedded) == (81, 80, 1)  # only the new image
    rows = db.query(ws, "SELECT model, dims, model_sha256, count(*), count(DISTINCT image_id), "
                        "bool_and(len(vector) = dims) FROM embeddings GROUP BY ALL")[1]
    assert rows == [(first.model, 64, file_sha256(pico_checkpoint), 81, 81, True)]
    assert first.model.endswith(file_sha256(pico_checkpoint)[:12])
    assert db.query(ws, "SELECT count(*) FROM embeddings WHERE image_id = ?", [copy])[1] == [(1,)]
    assert len(list((ws.embeddings_dir / first.model).glob("part-*.parquet"))) == 4  # 32 + 32 + 16, then 1


def test_a_planted_near_copy_comes_back_first(embedded):
    ws, _, _, original, copy = embedded
    hits = more_like(ws, original, k=5)
    assert hits[0].image_id == copy and len(hits) == 5 and original not in [h.image_id for h in hits]
    assert hits[0].similarity > hits[1].similarity
    assert more_like(ws, copy, k=1)[0].image_id == original
    only_bars = more_like(ws, original, k=5, query="SELECT image_id FROM images WHERE source = 'bars'")
    assert copy not in [h.image_id for h in only_bars] and len(only_bars) == 5
    _, ids, added = update_index(ws)  # kept beside the vectors: nothing left to add
    assert added == 0 and len(ids) == 81


def test_hierarchical_clusters_nest_and_balanced_draws_are_deterministic(embedded):
    ws, *_ = embedded
    s = cluster_embeddings(ws, ClusterConfig(ks=(8, 3), seed=0))
    assert s.images == 81 and len(s.ks) == 2
    levels = db.query(ws, "SELECT level, count(*) FROM clusters GROUP BY ALL ORDER BY ALL")[1]
    assert levels == [(1, 81), (2, 81)]
    # a level-1 cluster lies inside exactly one level-2 cluster
    parents = db.query(ws, """SELECT count(DISTINCT b.cluster) FROM clusters a JOIN clusters b USING (image_id)
                              WHERE a.level = 1 AND b.level = 2 GROUP BY a.cluster""")[1]
    assert {n for (n,) in parents} == {1}
    q = "SELECT image_id FROM images"
    build = dict(samples_per_shard=100, include_excluded=True)
    _, a, _ = build_shard_set(ws, ShardSetSpec("bal-a", q, balance="clusters:2", target=12, seed=3, **build))
    _, b, _ = build_shard_set(ws, ShardSetSpec("bal-b", q, balance="clusters:2", target=12, seed=3, **build))
    _, c, _ = build_shard_set(ws, ShardSetSpec("bal-c", q, balance="clusters:2", target=12, seed=4, **build))
    assert a.selection_sha256 == b.selection_sha256 != c.selection_sha256
    assert a.samples == 12 and a.balance["by"] == "clusters:2" and a.balance["model"] == s.model
    avail, drawn = a.balance["available_counts"], a.balance["counts"]
    assert sum(drawn.values()) == 12 and set(drawn) <= set(avail)
    fair = 12 // len(avail)
    assert all(drawn.get(g, 0) == min(n, fair) or drawn.get(g, 0) >= fair for g, n in avail.items())
    _, d, _ = build_shard_set(ws, ShardSetSpec("bal-src", q, balance="source", target=10, **build))
    assert d.balance["counts"] == {"bars": 9, "copies": 1}  # the small group gives all it has


def test_water_fill_gives_equal_shares_and_spreads_what_small_groups_leave():
    from shards.balance import draw, water_fill

    rng = np.random.default_rng(0)
    assert water_fill(np.array([100, 5, 30]), 45, rng).tolist() == [20, 5, 20]
    assert water_fill(np.array([3, 4]), 50, rng).tolist() == [3, 4]
    paths = [("a", i % 2) for i in range(60)] + [("b", 0)] * 10 + [("c", 1)] * 2
    picks = draw(paths, 20, np.random.default_rng(7))
    assert picks == draw(paths, 20, np.random.default_rng(7)) and len(set(picks)) == 20
    by_top = {k: sum(paths[i][0] == k for i in picks) for k in "abc"}
    assert by_top == {"a": 9, "b": 9, "c": 2}
    assert sorted(sum(paths[i] == ("a", j) for i in picks) for j in (0, 1)) in ([4, 5], [5, 4])


def test_semdedup_flags_the_near_copy_as_a_semantic_duplicate(embedded):
    from curation.run import curate, resolve_config

    ws, *_, original, copy = embedded
    cfg = resolve_config(["semdedup.enabled=true", "semdedup.threshold=0.99999"])
    curate(ws, cfg)
    flagged = db.query(ws, "SELECT image_id, excluding FROM quality WHERE reason = 'semantic_duplicate'")[1]
    assert flagged == [(max(original, copy), True)]
    assert db.query(ws, "SELECT excluded FROM images WHERE image_id = ?", [max(original, copy)])[1] == [(True,)]


@pytest.mark.prefect
@pytest.mark.slow
def test_embed_cluster_search_and_a_balanced_shard_set_from_the_command_line(tmp_path, bars_workspace,
                                                                            pico_checkpoint, prefect_harness):
    import json

    from typer.testing import CliRunner

    from flows.cli import app

    runner = CliRunner()
    root = tmp_path / "workspace"
    shutil.copytree(bars_workspace.root, root)
    w = ["--workspace", str(root)]
    r = runner.invoke(app, ["embed", "--checkpoint", str(tmp_path / "nope.safetensors"), *w])
    assert r.exit_code == 2 and "no checkpoint" in r.output
    r = runner.invoke(app, ["embed", "--checkpoint", str(pico_checkpoint), "--pool", "mean",
                            "--query", "SELECT image_id FROM images WHERE split = 'train'", *w])
    assert r.exit_code == 0, r.output
    assert "embedded now" in r.output and "model sha256" in r.output
    r = runner.invoke(app, ["sql", "SELECT count(*) AS n, count(DISTINCT model) AS m FROM embeddings", "--format",
                            "json", *w])
    assert json.loads(r.output) == [{"n": 48, "m": 1}]
    r = runner.invoke(app, ["cluster", "--k", "6,2", *w])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["sql", "SELECT level, count(*) AS n FROM clusters GROUP BY ALL ORDER BY ALL",
                            "--format", "json", *w])
    assert json.loads(r.output) == [{"level": 1, "n": 48}, {"level": 2, "n": 48}]
    some = json.loads(runner.invoke(app, ["sql", "SELECT min(image_id) AS i FROM embeddings", "--format", "json",
                                          *w]).output)[0]["i"]
    r = runner.invoke(app, ["search", "--like", some, "--k", "3", "--out", str(tmp_path / "like.csv"), *w])
    assert r.exit_code == 0, r.output
    assert len((tmp_path / "like.csv").read_text().splitlines()) == 4
    r = runner.invoke(app, ["search", "--like", "0" * 32, *w])
    assert r.exit_code == 2 and "has no embedding" in r.output
    r = runner.invoke(app, ["shards", "build", "bal", "--query", "SELECT image_id FROM images", "--balance",
                            "clusters:2", "--target", "10", "--include-excluded", *w])
    assert r.exit_code == 0, r.output
    assert "balance over clusters:2" in r.output
    m = json.loads((root / "shards" / "bal" / "manifest.json").read_text())
    assert (m["samples"], m["balance"]["selected"], m["balance"]["available"], m["balance"]["unclustered"]) == (
        10, 10, 48, 32)  # the 32 val/test images were not embedded: left out, and counted
    r = runner.invoke(app, ["shards", "build", "bal2", "--query", "SELECT image_id FROM images", "--balance",
                            "clusters:2", *w])
    assert r.exit_code == 2 and "go together" in r.output


def test_the_curation_report_shows_the_largest_clusters_by_their_typical_images(embedded):
    from curation.report import write_curation_report
    from curation.run import curate

    ws, *_ = embedded
    if not db.query(ws, "SELECT count(*) FROM clusters")[1][0][0]:
        cluster_embeddings(ws, ClusterConfig(ks=(8, 3), seed=0))
    curate(ws)
    html = write_curation_report(ws).read_text()
    assert "<h2 id=clusters>Embedding clusters</h2>" in html and "level 2 (the coarsest)" in html
    sizes = db.query(ws, "SELECT count(*) FROM clusters WHERE level = 2 GROUP BY cluster ORDER BY 1 DESC")[1]
    assert html.count("data-cluster=") == len(sizes) and f"({sizes[0][0]:,} images)" in html
    assert html.count("<figure>", html.index("id=clusters")) == sum(min(6, n) for (n,) in sizes)
