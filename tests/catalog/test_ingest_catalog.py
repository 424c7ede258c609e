"""The phantom tree through ingest into the catalog: accounting, duplicates, labels, re-runs."""

import os

import numpy as np

from catalog import db
from catalog.store import ImageStore


def q(ws, sql, params=None):
    return db.query(ws, sql, params)[1]


def files_on_disk(root):
    return sum(len(fs) for _, _, fs in os.walk(root))


def test_every_file_is_accounted_for_once(phantom_workspace, phantom_root):
    ws, _ = phantom_workspace
    counts = dict(q(ws, "SELECT source, count(*) FROM files GROUP BY source"))
    assert counts["pacs"] == files_on_disk(phantom_root / "pacs") - 1  # labels.csv is the source's label file
    assert counts["public"] == files_on_disk(phantom_root / "public")
    assert q(ws, "SELECT count(*) FROM (SELECT source, file_id FROM files GROUP BY ALL HAVING count(*) > 1)")[0][0] == 0
    statuses = {s for (s,) in q(ws, "SELECT DISTINCT status FROM files")}
    assert statuses == {"ingested", "duplicate", "quarantined"}


def test_broken_files_have_their_reasons(phantom_workspace):
    ws, _ = phantom_workspace
    reasons = sorted(r for (r,) in q(ws, "SELECT reason FROM files WHERE status = 'quarantined'"))
    assert reasons == sorted(["truncated", "empty_file", "invalid_dicom", "unrecognized_format", "extension_mismatch",
                              "invalid_nifti", "non_image_object"])
    details = [d for (d,) in q(ws, "SELECT detail FROM files WHERE status = 'quarantined'")]
    assert all(d and "/" not in d for d in details)


def test_exact_duplicates_point_at_the_image_they_duplicate(phantom_workspace):
    ws, _ = phantom_workspace
    dups = q(ws, "SELECT source, duplicate_of FROM files WHERE status = 'duplicate'")
    assert len(dups) == 2 + 6  # the re-exported study (2 radiographs) + both knees of 3 patients in public
    ids = {i for (i,) in q(ws, "SELECT image_id FROM images")}
    assert all(d in ids for _, d in dups)
    # the canonical copy of a cross-source duplicate is the earlier source's
    assert {s for (s,) in q(ws, "SELECT i.source FROM images i JOIN files f ON f.duplicate_of = i.image_id")} == {"pacs"}


def test_images_are_unique_and_the_store_holds_their_exact_pixels(phantom_workspace):
    ws, _ = phantom_workspace
    rows = q(ws, "SELECT image_id, rows, cols, bits, store_path FROM images")
    assert len(rows) == len({r[0] for r in rows})
    store = ImageStore(ws.store_dir)
    for image_id, r, c, bits, store_path in rows[:40]:
        px = store.get(image_id)
        assert px.shape == (r, c) and px.dtype == (np.uint16 if bits == 16 else np.uint8)
        assert (ws.root / store_path).exists()
        from catalog.pixels import image_id as content_id

        assert content_id(px) == image_id


def test_labels_from_csv_and_folder(phantom_workspace):
    ws, _ = phantom_workspace
    tasks = dict(q(ws, "SELECT task, count(DISTINCT image_id) FROM labels GROUP BY task"))
    assert tasks["kl_grade"] == 12 + 6  # 12 DICOM knees (csv) + 6 public-only knees (folder); 6 copies share ids
    assert tasks["mri_acl"] == 6 * 12
    agree = q(ws, """SELECT count(*) FROM labels a JOIN labels b USING (image_id, task)
                     WHERE a.source = 'pacs' AND b.source = 'public' AND a.value <> b.value""")[0][0]
    assert agree == 0  # the copies carry the same grade in both sources


def test_series_slices_are_ordered_by_geometry(phantom_workspace):
    ws, _ = phantom_workspace
    rows = q(ws, """SELECT series_key, slice_index, slice_position FROM images
                    WHERE format = 'dicom' AND sequence_family = 'pd' ORDER BY series_key, slice_index""")
    assert len(rows) == 6 * 12
    for key in {r[0] for r in rows}:
        s = [r for r in rows if r[0] == key]
        assert [r[1] for r in s] == list(range(12))
        assert [r[2] for r in s] == sorted(r[2] for r in s)


def test_reingest_adds_nothing(phantom_workspace):
    from ingest.run import ingest_source

    ws, _ = phantom_workspace
    before = {t: q(ws, f"SELECT count(*) FROM {t}")[0][0] for t in ("file_versions", "occurrences", "labels")}
    parts = sorted(os.listdir(ws.parts_dir))
    summary = ingest_source(ws, "pacs")
    assert summary.result.files == 0 and summary.files_skipped == summary.files_seen
    assert sorted(os.listdir(ws.parts_dir)) == parts
    assert {t: q(ws, f"SELECT count(*) FROM {t}")[0][0] for t in before} == before


def test_a_changed_file_replaces_its_old_version(ws, tmp_path):
    from PIL import Image

    from ingest.run import ingest_source
    from ingest.sources import Source, add_source

    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(src / "a.png")
    add_source(ws, Source("s", str(src), "public"))
    ingest_source(ws, "s")
    Image.fromarray(np.full((8, 8), 9, np.uint8)).save(src / "a.png")
    os.utime(src / "a.png", ns=(1, 10**18))
    ingest_source(ws, "s")
    assert q(ws, "SELECT count(*) FROM files")[0][0] == 1
    assert q(ws, "SELECT count(*) FROM images")[0][0] == 1
    (image_id,) = q(ws, "SELECT image_id FROM images")[0]
    assert ImageStore(ws.store_dir).get(image_id).max() == 9


def test_catalog_duckdb_file_opens_with_plain_duckdb(phantom_workspace):
    import duckdb

    ws, _ = phantom_workspace
    con = duckdb.connect(str(ws.duckdb_path), read_only=True)
    # the views name their files relative to the workspace (a moved workspace still works): say where it is
    con.execute(f"SET file_search_path = '{ws.root}'")
    n = con.execute("SELECT count(*) FROM images").fetchall()[0][0]
    con.close()
    assert n == q(ws, "SELECT count(*) FROM images")[0][0] > 0
    assert "lineage" not in {r[0] for r in db.query(ws, "SHOW TABLES")[1]}
