"""Per-image curation results of an older algorithm version are computed again, once, kill-safely."""

from curation.dedup import keypoints
from curation.dedup.signatures import SIGNATURE_VERSION
from curation.run import retire_stale, retire_stale_keypoints, retire_stale_signatures


def test_stale_results_are_retired_once(ws):
    ws.signatures_dir.mkdir(parents=True, exist_ok=True)
    old = ws.signatures_dir / "run-000000.parquet"
    old.write_bytes(b"PAR1 from before the content box")  # no VERSION file: version 1
    assert retire_stale_signatures(ws) is True
    assert not old.exists() and (ws.signatures_dir / "VERSION").read_text().strip() == str(SIGNATURE_VERSION)
    assert retire_stale_signatures(ws) is False  # recorded: nothing more to do
    assert not any(ws.staging_dir.iterdir())  # the retired files are gone, not parked


def test_a_killed_retirement_is_finished_by_the_next_run(ws):
    folder = ws.keypoints_dir
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "a.parquet").write_bytes(b"x")
    (folder / "VERSION").write_text("1\n")
    assert retire_stale(folder, keypoints.FEATURES_VERSION, ws.staging_dir) is True
    (folder / "VERSION").unlink()  # as if killed before the version was recorded
    (folder / "b.parquet").write_bytes(b"y")  # ... and something written meanwhile
    assert retire_stale_keypoints(ws) is True  # no record: whatever is there is moved aside
    assert sorted(p.name for p in folder.iterdir()) == ["VERSION"]
