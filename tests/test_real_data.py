"""The real data in ../shared/data: every file accounted for, KL grades and MRI labels in `labels`."""

import os

import pytest

from catalog import db
from flows.demo import KL_PATTERN
from ingest.run import ingest_source
from ingest.sources import Source, add_source
from tests.shared_data import shared_data

MRNET_PATTERN = r"(?P<exam>\d+)_(?P<plane>axial|coronal|sagittal)\.nii\.gz"


def n_files(path):
    return sum(len(f) for _, _, f in os.walk(path))


@pytest.fixture(scope="module")
def real_catalog(tmp_path_factory):
    """All four folders ingested once; the tests below only read the catalog (or add a shard set)."""
    from catalog.workspace import Workspace

    root = shared_data()
    ws = Workspace.open(tmp_path_factory.mktemp("real") / "workspace")
    add_source(ws, Source("oai-kl", str(root / "knee-xray-kl"), "public", labels=["folder:kl_grade"],
                          path_pattern=KL_PATTERN, modality="DX", body_part="knee"))
    add_source(ws, Source("oai-kl-clahe", str(root / "knee-xray-kl-clahe"), "public", labels=["folder:kl_grade"],
                          path_pattern=r"(?P<split>train|val|test)/(?P<label>\d)/(?P<patient>\d+)(?P<laterality>[LR])?\.png",
                          modality="DX", body_part="knee"))
    # MRNet's noisy slices send one in six to OCR (~0.6 s each, docs/benchmarks.md): screening is
    # tested on its own (tests/ingest/test_burned_text.py), this test is about the catalog
    add_source(ws, Source("mrnet", str(root / "knee-mri-nifti"), "public", labels=["csv:labels.csv:prefix=mri_"],
                          path_pattern=MRNET_PATTERN, modality="MR", body_part="knee", burned_in="off"))
    add_source(ws, Source("dicom", str(root / "dicom"), "internal"))
    for name in ("oai-kl", "oai-kl-clahe", "mrnet", "dicom"):
        ingest_source(ws, name, batch_size=256)
    return ws


@pytest.mark.slow
def test_all_four_folders(real_catalog):
    root, ws = shared_data(), real_catalog
    files = dict(db.query(ws, "SELECT source, count(*) FROM files GROUP BY ALL")[1])
    assert files == {"oai-kl": n_files(root / "knee-xray-kl"), "oai-kl-clahe": n_files(root / "knee-xray-kl-clahe"),
                     "mrnet": n_files(root / "knee-mri-nifti") - 1, "dicom": n_files(root / "dicom")}
    assert db.query(ws, "SELECT count(*) FROM files WHERE status = 'quarantined'")[1][0][0] == 0
    kl = dict(db.query(ws, "SELECT value, count(*) FROM labels WHERE source = 'oai-kl' AND task = 'kl_grade' GROUP BY ALL")[1])
    assert sum(kl.values()) == n_files(root / "knee-xray-kl") and set(kl) == {"0", "1", "2", "3", "4"}
    acl = dict(db.query(ws, """SELECT i.study_key, any_value(l.value) FROM labels l JOIN images i USING (image_id)
                               WHERE l.task = 'mri_acl' GROUP BY ALL""")[1])
    assert len(acl) == 8
    planes = dict(db.query(ws, "SELECT plane, count(DISTINCT series_key) FROM images WHERE source = 'mrnet' GROUP BY ALL")[1])
    assert planes == {"axial": 8, "coronal": 8, "sagittal": 8}
    # the MONOCHROME1 radiograph was inverted once; DICOM series keep their slice order and no names
    dicom = db.query(ws, "SELECT modality, count(*) FROM images WHERE source = 'dicom' GROUP BY ALL ORDER BY ALL")[1]
    assert dict(dicom)["MR"] == 77 and dict(dicom)["CR"] == 1
    pids = {p for (p,) in db.query(ws, "SELECT DISTINCT patient_key FROM images WHERE source = 'oai-kl'")[1]}
    raw_ids = {f[:-5] for _, _, fs in os.walk(root / "knee-xray-kl") for f in fs}
    assert len(pids) == len(raw_ids) and not pids & raw_ids and all(len(p) == 16 for p in pids)


@pytest.mark.slow
def test_real_knee_xrays_round_trip_through_shards(real_catalog):
    import numpy as np

    from catalog.store import ImageStore
    from shards.reader import ShardStream
    from shards.verify import verify
    from shards.spec import ShardSetSpec
    from shards.writer import build_shard_set

    root, ws = shared_data("knee-xray-kl"), real_catalog
    path, m, _ = build_shard_set(ws, ShardSetSpec("kl-val", "SELECT image_id FROM images WHERE source = 'oai-kl' AND "
                                               "source_split = 'val'", target_size="8MB"))
    assert m.samples == n_files(root / "val") and len(m.shards) > 1 and verify(path) == []
    grades = dict(db.query(ws, "SELECT image_id, value FROM labels WHERE task = 'kl_grade'")[1])
    store = ImageStore(ws.store_dir)
    n = 0
    for sample in ShardStream(str(path)):
        assert np.array_equal(sample["image"], store.get(sample["__key__"]))
        assert sample["meta"]["labels"]["kl_grade"] == grades[sample["__key__"]]
        assert sample["meta"]["source_split"] == "val"
        n += 1
    assert n == m.samples


def knee_subset(root, originals: list, out, every: int = 6):
    """A copy of knee-xray-kl with the originals of every CLAHE copy and re-export, both knees of each of those
    patients (left and right must stay apart), and one in `every` other knee as distractors: the same cases
    as the whole folder at a fraction of its ingest and curation."""
    import shutil

    kl = root / "knee-xray-kl"
    copies = {p.relative_to(root / "knee-xray-kl-clahe") for p in (root / "knee-xray-kl-clahe").rglob("*.png")}
    wanted = copies | {p.relative_to(kl) for p in originals}
    patients = {p.stem[:-1] for p in wanted}
    files = sorted(p.relative_to(kl) for p in kl.rglob("*.png"))
    keep = [f for i, f in enumerate(files) if f in wanted or f.stem[:-1] in patients or i % every == 0]
    assert wanted <= set(keep)
    for rel in keep:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(kl / rel, out / rel)
    return out


def write_cropped_reexports(originals: list, out) -> list[str]:
    """Re-exports of real knees that trim 3-12% of each side at a random offset, then: kept as is,
    resized back and saved as JPEG, contrast-enhanced (CLAHE), or downscaled to 60%."""
    import io

    import cv2
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(7)
    names = []
    for k, path in enumerate(originals):
        a = np.asarray(Image.open(path).convert("L"))
        h, w = a.shape
        f = rng.uniform(0.88, 0.97)
        ch, cw = round(h * f), round(w * f)
        y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        c = a[y0 : y0 + ch, x0 : x0 + cw]
        name = f"reexport{k:03d}.png"
        if k % 4 == 1:
            buf = io.BytesIO()
            Image.fromarray(c).resize((w, h), Image.BICUBIC).save(buf, "JPEG", quality=80)
            name = f"reexport{k:03d}.jpg"
            (out / name).write_bytes(buf.getvalue())
            names.append(name)
            continue
        if k % 4 == 2:
            c = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(np.ascontiguousarray(c))
        elif k % 4 == 3:
            c = np.asarray(Image.fromarray(c).resize((round(cw * 0.6), round(ch * 0.6)), Image.LANCZOS))
        Image.fromarray(c).save(out / name)
        names.append(name)
    return names


def _reexports_grouped(ws, kl_root, originals: list, names: list[str]) -> list[bool]:
    """For each re-export, whether it shares its original's dup_group (paths from the private lineage)."""
    con = db.connect(ws, private=True)
    try:
        rows = con.execute("""SELECT l.source, l.path, i.dup_group FROM lineage l
                              JOIN occurrences o USING (source, file_id) JOIN images i USING (image_id)
                              WHERE l.source IN ('oai-kl', 'reexports')""").fetchall()
    finally:
        con.close()
    group = {(s, str(p).replace(os.sep, "/")): g for s, p, g in rows}

    def find(source: str, suffix: str):
        hits = [g for (s, p), g in group.items() if s == source and p.endswith(suffix)]
        assert len(hits) == 1, (source, suffix)
        return hits[0]

    out = []
    for orig, name in zip(originals, names):
        g_orig, g_copy = find("oai-kl", orig.relative_to(kl_root).as_posix()), find("reexports", name)
        out.append(g_copy is not None and g_copy == g_orig)
    return out


@pytest.mark.slow
def test_clahe_copies_and_cropped_reexports_are_grouped_with_their_originals(ws, tmp_path):
    from curation.run import curate

    root = shared_data()
    originals = sorted((root / "knee-xray-kl" / "train").rglob("*.png"))[::61][:40]
    crops_dir = tmp_path / "reexports"
    crops_dir.mkdir()
    names = write_cropped_reexports(originals, crops_dir)
    kl_root = knee_subset(root, originals, tmp_path / "knee-xray-kl")
    add_source(ws, Source("oai-kl", str(kl_root), "public", labels=["folder:kl_grade"],
                          path_pattern=KL_PATTERN, modality="DX", body_part="knee"))
    add_source(ws, Source("clahe", str(root / "knee-xray-kl-clahe"), "public", path_pattern=KL_PATTERN,
                          modality="DX", body_part="knee"))
    add_source(ws, Source("reexports", str(crops_dir), "public", modality="DX", body_part="knee"))
    ingest_source(ws, "oai-kl", batch_size=512)
    ingest_source(ws, "clahe")
    ingest_source(ws, "reexports")
    summary = curate(ws)
    found = db.query(ws, """SELECT count(*) FROM images c JOIN images o ON c.dup_group = o.dup_group
                            AND c.patient_key = o.patient_key AND c.laterality = o.laterality
                            WHERE c.source = 'clahe' AND o.source = 'oai-kl'""")[1][0][0]
    assert found >= 57  # recall >= 0.95 of the 60 CLAHE copies
    wrong = db.query(ws, """SELECT count(*) FROM (SELECT dup_group FROM images WHERE source = 'oai-kl'
                            AND dup_group IS NOT NULL GROUP BY dup_group HAVING count(*) > 1)""")[1][0][0]
    assert wrong == 0  # no two different knees of knee-xray-kl grouped
    assert db.query(ws, "SELECT count(*) FROM images WHERE source = 'clahe' AND dup_representative")[1][0][0] == 0
    grouped = _reexports_grouped(ws, root / "knee-xray-kl", originals, names)
    assert sum(grouped) >= 36, grouped  # recall >= 0.9 of 40 crops (measured: 0.95 on 400, docs/benchmarks.md)
    assert summary.crop_search["verified"] >= sum(grouped) - 2  # found by the crop search, not by chance
    different = db.query(ws, """SELECT count(*) FROM (SELECT dup_group FROM images WHERE source = 'reexports'
                                AND dup_group IS NOT NULL GROUP BY dup_group HAVING count(*) > 1)""")[1][0][0]
    assert different == 0  # no two re-exports (all of different knees) in one group
