"""No single image can stop a stage: a stored image over the pixel budget (the budget lowered through the
environment's settings, so a modest image exceeds it) and a corrupt stored object are left out of curation, shard
building, the DICOM export and the curation report with a reason, recorded and counted (`unreadable`, `ortho
status`, the report), and each stage goes on with the rest."""

import io

import numpy as np
import pytest

from catalog import db, pixel_budget
from catalog.status import catalog_status
from curation.export_dicom import export_selection
from curation.report import write_curation_report
from curation.run import UNREADABLE_REASON, curate
from flows.settings import RuntimeSettings
from ingest.run import ingest_source
from ingest.sources import Source, add_source
from shards.spec import ShardSetSpec
from shards.writer import build_shard_set
from tests.ingest.dicom_factory import make_dicom


def _smooth(rows: int, cols: int, seed: int) -> np.ndarray:
    y, x = np.mgrid[0:rows, 0:cols]
    return (800 + 600 * np.sin(x / (9 + seed)) * np.cos(y / (13 + seed)) + 40 * seed).astype(np.uint16)


@pytest.fixture
def planted(ws, tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    shapes = {"big": (200, 180), "bad": (96, 96), "ok1": (96, 96), "ok2": (96, 112)}
    for i, (name, shape) in enumerate(shapes.items()):
        (folder / f"{name}.dcm").write_bytes(make_dicom(_smooth(*shape, i), Modality="CR", BodyPartExamined="KNEE",
                                                         PatientID=f"P{i}"))
    add_source(ws, Source("h", str(folder), "internal", burned_in="off"))
    ingest_source(ws, "h")
    ids = dict(db.query(ws, "SELECT rows * cols, image_id FROM images")[1])
    big, bad = ids[200 * 180], ids[96 * 96]
    path = ws.store_dir / bad[:2] / f"{bad}.png"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a flipped byte inside the pixel data: the object is corrupt, its header intact
    path.write_bytes(bytes(data))
    RuntimeSettings.from_environ({"ORTHO_MAX_PIXELS": str(150 * 150)}).apply()
    yield ws, big, bad
    pixel_budget.configure(None)


def test_every_stage_leaves_the_unreadable_out_with_a_reason_and_goes_on(planted, tmp_path):
    ws, big, bad = planted
    summary = curate(ws)
    assert summary.quality.get(UNREADABLE_REASON) == 2
    excluded = dict(db.query(ws, "SELECT image_id, excluded FROM images")[1])
    assert excluded[big] and excluded[bad]
    assert summary.new_signatures == 4 and len(db.query(ws, "SELECT * FROM signatures")[1]) == 2

    _, manifest, _ = build_shard_set(ws, ShardSetSpec("all", "SELECT image_id FROM images", include_excluded=True, samples_per_shard=10))
    assert manifest.samples == 2 and manifest.unreadable == {"absurd_dimensions": 1, "decode_error": 1}

    result = export_selection(ws, "SELECT image_id FROM images", tmp_path / "out")
    assert len(result.written) == 2
    assert result.skipped == {"unreadable_pixels:absurd_dimensions": 1, "unreadable_pixels:decode_error": 1}

    page = write_curation_report(ws, out_dir=tmp_path / "report").read_text()
    assert "Images that could not be read" in page and UNREADABLE_REASON in page

    counts = {(u["stage"], u["reason"]): u["images"] for u in catalog_status(ws)["unreadable_images"]}
    for stage in ("curate", "shards", "export"):
        assert counts[(stage, "absurd_dimensions")] == 1 and counts[(stage, "decode_error")] == 1
    assert db.query(ws, "SELECT DISTINCT image_id FROM unreadable ORDER BY 1")[1] == sorted([(big,), (bad,)])

    # with the budget raised the large image is read again: no longer flagged, and curation still goes on
    pixel_budget.configure(None)
    assert curate(ws).quality.get(UNREADABLE_REASON) == 1
    assert ("curate", "absurd_dimensions") not in {(u["stage"], u["reason"]) for u in catalog_status(ws)["unreadable_images"]}


def test_a_balanced_draw_is_made_from_readable_images_and_keeps_its_target(planted):
    """Two of the four images cannot be read: whichever a seed draws first, the set holds two readable images and
    its manifest says how many drawn images were replaced."""
    from shards.balance import BalanceSpec
    from shards.readable import balanced_readable
    from shards.select import select

    ws, big, bad = planted
    records = select(ws, "SELECT image_id FROM images", True, False)
    redrawn = []
    for seed in range(6):
        picked, summary, unreadable = balanced_readable(ws, records, BalanceSpec("source", 2), seed)
        assert len(picked) == 2 and {big, bad}.isdisjoint(r["image_id"] for r in picked)
        assert summary["unreadable_redrawn"] == len(unreadable.images)
        redrawn.append(summary["unreadable_redrawn"])
    assert max(redrawn) >= 1, "some seed drew an unreadable image first"
    seed = redrawn.index(max(redrawn))
    _, manifest, _ = build_shard_set(ws, ShardSetSpec("bal", "SELECT image_id FROM images", include_excluded=True,
                                                      samples_per_shard=10, balance="source", target=2, seed=seed))
    assert manifest.samples == 2 and manifest.balance["unreadable_redrawn"] == max(redrawn)
    assert sum(manifest.unreadable.values()) == max(redrawn)
