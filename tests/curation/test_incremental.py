"""Incremental curation (curation/dedup/incremental.py): a catalog grown in steps and curated after each gives a full
run's groups and recorded matches; a changed setting, a removed image or `full` forces a full run; the saved state
is kill-safe."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from catalog import db
from catalog.workspace import Workspace
from curation.dedup.index import LayeredIndex, index_dir
from curation.run import CurateConfig, curate, resolve_config
from ingest.run import ingest_source
from ingest.sources import Source, add_source
from tests.curation.test_crop_match import textured, trimmed

PATTERN = r"(?P<patient>[a-z0-9]+)_(?P<laterality>[LRU])\.png"


def _8bit(a: np.ndarray) -> np.ndarray:
    return (a / 16).astype(np.uint8)


def _noisy(a: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """A re-encoded copy: the same knee, its fine texture partly lost (global cosine ~0.8)."""
    noise = np.random.default_rng(seed).normal(0, sigma, a.shape)
    return np.clip(a + noise, 0, 4095).astype(np.uint16)


def steps() -> list[dict[str, tuple[np.ndarray, str]]]:
    """Three arrivals, name -> (pixels, laterality). Families never pass 3 images: each descriptor has fewer than
    the crop search's k = 5 close neighbours (itself included), so the k cap never binds and an incremental
    vote search finds every vote a full one does."""
    a = {i: textured(100 + i) for i in range(8)}
    n = {i: textured(120 + i) for i in range(3)}
    left = textured(200)
    first = {f"a{i}": (a[i], "U") for i in range(8)} | {
        "b0": (textured(110), "U"), "b0w": (_8bit(textured(110)), "U"),  # a global pair in the first step
        "l0": (left, "L"), "r0": (np.ascontiguousarray(left[:, ::-1]), "R"),  # a person's two knees: never joined
        "a3n": (_noisy(a[3], 300, 1), "U")}  # a3's first match, a weak one (global cosine ~0.78)
    second = {
        "a0c": (trimmed(a[0], 0.90, 0.2, 0.8), "U"),  # crop of an old image
        "a1f": (np.ascontiguousarray(a[1][:, ::-1]), "U"),  # mirror of an old image
        "a2m": (np.ascontiguousarray(trimmed(a[2], 0.92, 0.5, 0.3, out_size=256)[:, ::-1]), "U"),  # mirrored crop
        **{f"n{i}": (n[i], "U") for i in range(3)}, "n0w": (_8bit(n[0]), "U"),  # a pair of two new images
        "a5c": (trimmed(a[5], 0.9, 0.0, 0.0), "U"), "a5c2": (trimmed(a[5], 0.88, 1.0, 1.0, out_size=200), "U")}
    third = {
        "a0w": (_8bit(a[0]), "U"),  # a global match for a0, whose recorded match was a crop
        "a3w": (_8bit(a[3]), "U"),  # a better match for a3 than a3n
        "n1c": (trimmed(n[1], 0.9, 0.7, 0.1, out_size=256), "U"),  # crop of an image of the second step
        "l0c": (trimmed(left, 0.9, 0.5, 0.5), "L")}
    return [first, second, third]


def add_step(ws: Workspace, root, k: int, images: dict) -> None:
    folder = root / f"step{k}"
    folder.mkdir(parents=True)
    for name, (pixels, lat) in images.items():
        Image.fromarray(pixels).save(folder / f"{name}_{lat}.png")
    add_source(ws, Source(f"step{k}", str(folder), "public", path_pattern=PATTERN, modality="DX", body_part="knee"))
    ingest_source(ws, f"step{k}")


def names(ws: Workspace) -> dict[str, str]:
    """image id -> the name of its file (a0c, ...)."""
    with db.connection(ws, private=True) as con:
        found = con.execute("SELECT i.image_id, l.path FROM images i JOIN lineage l USING (file_id)").fetchall()
    return {i: path.split("_")[0] for i, path in found}


def rows(ws: Workspace) -> list[tuple]:
    """dup_groups by file name: image, group's name, representative, size, match, method, similarity."""
    name = names(ws)
    found = db.query(ws, "SELECT * FROM dup_groups")[1]
    return sorted((name[i], name[g], rep, size, name[m], method, sim) for i, g, rep, size, m, method, sim in found)


def same_rows(a: list[tuple], b: list[tuple]) -> bool:
    """Equal, similarities to float32 rounding (an incremental run computes a cosine in another matrix product)."""
    return [r[:6] for r in a] == [r[:6] for r in b] and np.allclose([r[6] for r in a], [r[6] for r in b],
                                                                    rtol=1e-5, atol=1e-6)


def groups_by_name(ws: Workspace) -> set[frozenset]:
    found = db.query(ws, "SELECT list(image_id) FROM dup_groups GROUP BY dup_group")[1]
    name = names(ws)
    return {frozenset(name[i] for i in ids) for (ids,) in found}


@pytest.fixture(scope="module")
def grown(tmp_path_factory):
    """The catalog grown in three steps, curated after each; and a copy curated once, in full."""
    root = tmp_path_factory.mktemp("grown")
    ws = Workspace.open(root / "ws")
    summaries = []
    for k, images in enumerate(steps()):
        add_step(ws, root / "src", k, images)
        summaries.append(curate(ws))
    full = Workspace.open(root / "full")
    shutil.copytree(ws.root, full.root, dirs_exist_ok=True)
    return ws, summaries, full, curate(full, full=True)


def test_steps_after_the_first_query_only_the_new_images(grown):
    ws, summaries, _, full = grown
    assert [s.search["mode"] for s in summaries] == ["full", "incremental", "incremental"]
    assert summaries[0].search["reason"] == "no_index"
    sizes = [len(s) for s in steps()]
    assert [s.search["queried"] for s in summaries] == [sizes[0], sizes[1], sizes[2]]
    assert summaries[-1].search["indexed"] == sum(sizes) == summaries[-1].images
    assert full.search == {**full.search, "mode": "full", "reason": "requested", "queried": sum(sizes)}


def test_incremental_groups_and_matches_equal_a_full_run(grown):
    ws, _, full_ws, _ = grown
    inc, full = rows(ws), rows(full_ws)
    assert len(inc) > 20 and same_rows(inc, full)
    assert groups_by_name(ws) == groups_by_name(full_ws)


def test_the_grown_catalog_is_grouped_as_planted(grown):
    ws, *_ = grown
    got = groups_by_name(ws)
    for family in ({"a0", "a0c", "a0w"}, {"a1", "a1f"}, {"b0", "b0w"}, {"n0", "n0w"}, {"a3", "a3n", "a3w"},
                   {"n1", "n1c"}, {"a5", "a5c", "a5c2"}, {"l0", "l0c"}):
        assert frozenset(family) in got, family
    assert not any({"l0", "r0"} <= g for g in got)
    method = {r[0]: (r[4], r[5]) for r in rows(ws)}
    assert method["a0"] == ("a0w", "embedding")  # the later global match replaced the crop match
    assert method["a0c"][1] == "crop" and method["a3"] == ("a3w", "embedding")  # a better match replaced a3n
    assert method["a1f"] == ("a1", "embedding_flip")


def test_a_changed_setting_or_a_removed_image_forces_a_full_run(grown, tmp_path):
    src, *_ = grown
    ws = Workspace.open(tmp_path / "ws")
    shutil.copytree(src.root, ws.root, dirs_exist_ok=True)
    before = rows(ws)
    assert curate(ws).search == {"mode": "incremental", "reason": "", "queried": 0, "indexed": len(names(ws))}
    s = curate(ws, resolve_config(["dedup.threshold=0.7"]))
    assert (s.search["mode"], s.search["reason"]) == ("full", "settings_changed")
    s = curate(ws)  # back to the defaults: the state was rebuilt at 0.7
    assert s.search["reason"] == "settings_changed" and same_rows(rows(ws), before)
    manifest = json.loads((index_dir(ws) / "MANIFEST.json").read_text())
    manifest["settings"]["features_version"] = -1
    (index_dir(ws) / "MANIFEST.json").write_text(json.dumps(manifest))
    assert curate(ws).search["reason"] == "features_changed"
    # a state shorter than its manifest (a truncated file) is not trusted
    build = index_dir(ws) / json.loads((index_dir(ws) / "MANIFEST.json").read_text())["build"]
    (build / "emb").write_bytes((build / "emb").read_bytes()[:-512])
    assert curate(ws).search["reason"] == "index_inconsistent" and same_rows(rows(ws), before)
    shutil.rmtree(ws.parts_dir / next(p.name for p in sorted(ws.parts_dir.iterdir())))  # an ingest part gone
    s = curate(ws)
    assert (s.search["mode"], s.search["reason"]) == ("full", "images_removed")


def test_crops_off_keeps_a_state_of_its_own(grown, tmp_path):
    src, *_ = grown
    ws = Workspace.open(tmp_path / "ws")
    shutil.copytree(src.root, ws.root, dirs_exist_ok=True)
    cfg = CurateConfig(dedup=resolve_config(["dedup.crops.enabled=false"]).dedup)
    s = curate(ws, cfg)
    assert s.search["reason"] == "settings_changed" and not s.crop_search
    assert "crop" not in {r[5] for r in rows(ws)}
    assert curate(ws, cfg).search["mode"] == "incremental"


def test_layered_index_answers_as_one_index():
    import faiss

    rng = np.random.default_rng(0)
    x = rng.standard_normal((6000, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    trained = faiss.index_factory(32, "IVF64,SQ8")
    trained.train(x[:3000])
    whole, base, delta = (faiss.clone_index(trained) for _ in range(3))
    whole.add(x)
    base.add(x[:5000])
    delta.add(x[5000:])
    for index in (whole, base, delta):
        index.nprobe = 8
    layered = LayeredIndex(base, delta)
    d1, i1 = whole.search(x[:500], 6)
    d2, i2 = layered.search(x[:500], 6)
    assert np.array_equal(i1, i2) and np.allclose(d1, d2)
    lims1, _, j1 = whole.range_search(x[4900:5100], 1.2)
    lims2, _, j2 = layered.range_search(x[4900:5100], 1.2)
    assert np.array_equal(lims1, lims2) and len(j1) > 200
    assert all(set(j1[lims1[q]:lims1[q + 1]]) == set(j2[lims2[q]:lims2[q + 1]]) for q in range(200))


@pytest.mark.slow
def test_ivf_searches_grow_through_delta_layers_and_merges(tmp_path):
    """Past `exact_below` both searches are IVF indexes saved by the full run; later runs add delta layers, and
    merge a delta into a new base once it outgrows a quarter of it. Near-identical matches are found either way."""
    cfg = resolve_config(["dedup.exact_below=50", "dedup.crops.exact_below=0"])
    base = {f"x{i}": (textured(300 + i), "U") for i in range(110)}  # 2,640 descriptors: IVF for both searches
    later = [{f"x{i}w": (_8bit(base[f"x{i}"][0]), "U") for i in range(k, k + 8)}
             | {f"x{i}c": (trimmed(base[f"x{i}"][0], 0.9, 0.3, 0.6, out_size=256), "U") for i in range(k + 8, k + 16)}
             | {f"y{k + i}": (textured(500 + k + i), "U") for i in range(4)}
             | {f"z{k}": (textured(600 + k), "U"), f"z{k}w": (_8bit(textured(600 + k)), "U"),  # two new copies of
                f"z{k}c": (trimmed(textured(600 + k), 0.9, 0.6, 0.2, out_size=256), "U")} for k in (0, 20)]  # a new one
    ws = Workspace.open(tmp_path / "ws")
    summaries = []
    for k, images in enumerate([base, *later]):
        add_step(ws, tmp_path / "src", k, images)
        summaries.append(curate(ws, cfg))
    assert [s.search["mode"] for s in summaries] == ["full", "incremental", "incremental"]
    manifest = json.loads((index_dir(ws) / "MANIFEST.json").read_text())
    assert manifest["modes"] == {"global": "ivf", "crops": "ivf"}
    assert all(spec["delta"] is None and spec["base_rows"] > 110 for spec in manifest["faiss"].values())  # merged
    got = groups_by_name(ws)
    planted = {frozenset({f"x{i}", f"x{i}{s}"}) for k in (0, 20) for i, s in
               [(i, "w") for i in range(k, k + 8)] + [(i, "c") for i in range(k + 8, k + 16)]}
    planted |= {frozenset({f"z{k}", f"z{k}w", f"z{k}c"}) for k in (0, 20)}
    assert planted <= got and len(got) == len(planted)
    full = Workspace.open(tmp_path / "full")
    shutil.copytree(ws.root, full.root, dirs_exist_ok=True)
    assert curate(full, cfg, full=True).search["mode"] == "full"
    assert same_rows(rows(ws), rows(full))


KILL_SCRIPT = """
import sys
from catalog.workspace import Workspace
from curation.run import curate
curate(Workspace.open(sys.argv[1]))
"""


@pytest.mark.slow
def test_an_incremental_run_killed_anywhere_and_rerun_equals_an_uninterrupted_one(grown, tmp_path):
    """kill -9 after the new rows are appended, after the new graph is written, after the manifest is replaced (before
    the results are published): the rerun's catalog is the uninterrupted run's."""
    from tests.killing import run_or_kill
    from tests.snapshots import curated_snapshot

    src, *_ = grown
    start = Workspace.open(tmp_path / "start")
    shutil.copytree(src.root, start.root, dirs_exist_ok=True)
    add_step(start, tmp_path / "src", 9, {f"k{i}": (_8bit(textured(100 + i)), "U") for i in range(3)}
             | {"kc": (trimmed(textured(121), 0.9, 0.1, 0.9), "U"), "kn": (textured(700), "U")})
    reference, victim = (Workspace.open(tmp_path / name) for name in ("reference", "victim"))
    for ws in (reference, victim):
        shutil.copytree(start.root, ws.root, dirs_exist_ok=True)
    run_or_kill(KILL_SCRIPT, [str(reference.root)])
    expected = curated_snapshot(reference)
    root = index_dir(victim)
    manifest = (root / "MANIFEST.json").read_text()
    build = root / json.loads(manifest)["build"]
    emb_size, graphs = (build / "emb").stat().st_size, set(build.glob("graph-*"))
    moments = [lambda: (build / "emb").stat().st_size > emb_size,
               lambda: set(build.glob("graph-*")) - graphs,
               lambda: (root / "MANIFEST.json").read_text() != manifest]
    kills = sum(not run_or_kill(KILL_SCRIPT, [str(victim.root)], when, jitter_s=0.005) for when in moments)
    run_or_kill(KILL_SCRIPT, [str(victim.root)])
    assert kills >= 2
    assert curated_snapshot(victim) == expected
    assert not list(root.rglob("*.tmp")) and len([p for p in root.iterdir() if p.is_dir()]) == 1


@pytest.mark.slow
def test_ortho_curate_says_how_it_searched_and_full_forces_a_full_run(grown, tmp_path, prefect_harness):
    from typer.testing import CliRunner

    from flows.cli import app

    src, *_ = grown
    ws = Workspace.open(tmp_path / "ws")
    shutil.copytree(src.root, ws.root, dirs_exist_ok=True)
    n = len(names(ws))
    args = ["curate", "--runner", "threads", "--workers", "1", "--workspace", str(ws.root)]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    assert f"near-duplicate search: incremental, 0 new images queried against {n}" in out.output
    out = CliRunner().invoke(app, [*args, "--full"])
    assert out.exit_code == 0, out.output
    assert f"near-duplicate search: full (--full), {n} images" in out.output
