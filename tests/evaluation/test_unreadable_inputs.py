"""No single image stops `ortho embed` or an evaluation: a stored object that is missing or corrupt is skipped with
a reason, recorded (the `unreadable` view, `ortho status`) and counted, and the rest is embedded or evaluated."""

import shutil

import pytest

from catalog import db
from catalog.status import catalog_status
from catalog.unreadable import Unreadable
from catalog.workspace import Workspace
from evaluation.catalog_embed import EmbedConfig, embed_catalog
from evaluation.data import load_task
from evaluation.run import load_tasks


@pytest.fixture
def damaged(bars_workspace, tmp_path):
    """A copy of the bars workspace with one stored object gone and one with a flipped byte in its pixel data."""
    ws = Workspace.open(tmp_path / "workspace")
    shutil.copytree(bars_workspace.root, ws.root, dirs_exist_ok=True)
    ids = [r[0] for r in db.query(ws, "SELECT image_id FROM images JOIN labels USING (image_id) "
                                      "WHERE NOT excluded ORDER BY image_id LIMIT 2")[1]]
    gone, bad = ids
    (ws.store_dir / gone[:2] / f"{gone}.png").unlink()
    path = ws.store_dir / bad[:2] / f"{bad}.png"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return ws, gone, bad


def _stage_counts(ws, stage):
    return {u["reason"]: u["images"] for u in catalog_status(ws)["unreadable_images"] if u["stage"] == stage}


def test_embed_skips_what_the_store_cannot_give_with_a_reason_and_embeds_the_rest(damaged, pico_checkpoint):
    ws, gone, bad = damaged
    s = embed_catalog(ws, EmbedConfig(str(pico_checkpoint), batch_size=32))
    assert (s.selected, s.embedded) == (80, 78) and sorted(s.unreadable) == sorted([gone, bad])
    assert s.unreadable_reasons == {"decode_error": 1, "missing_object": 1}
    assert _stage_counts(ws, "embed") == {"decode_error": 1, "missing_object": 1}
    assert db.query(ws, "SELECT count(*) FROM embeddings WHERE image_id IN (?, ?)", [gone, bad])[1] == [(0,)]


def test_an_evaluation_leaves_unreadable_labelled_images_out_of_its_tasks_and_records_why(damaged):
    ws, gone, bad = damaged
    whole = load_task(ws, "kl_grade")
    unreadable = Unreadable("evaluate", "e1")
    [(task, splits)] = load_tasks(ws, ["kl_grade"], None, unreadable)
    assert len(task.image_ids) == len(whole.image_ids) - 2 and {gone, bad}.isdisjoint(task.image_ids)
    assert len(splits.fit) + len(splits.select) + len(splits.test) <= len(task.image_ids)
    assert unreadable.images == {gone: "missing_object", bad: "decode_error"}
    unreadable.save(ws)
    assert _stage_counts(ws, "evaluate") == {"decode_error": 1, "missing_object": 1}
    # the command line's own check (before the flow starts) reads labels only, never the store
    [(unchecked, _)] = load_tasks(ws, ["kl_grade"], None)
    assert unchecked.image_ids == whole.image_ids
