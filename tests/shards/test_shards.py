"""Shard sets: exact round trips, determinism, verification, bad input, balanced resumable loading."""

import hashlib
import json
import tarfile

import numpy as np
import pytest

from catalog import db
from catalog.store import ImageStore
from shards.manifest import Manifest
from shards.reader import ShardStream, build_loader
from shards.select import SelectionError
from shards.verify import verify
from shards.spec import ShardSetSpec
from shards.writer import ShardError, build_shard_set

ALL = "SELECT image_id FROM images"


def build(ws, name="s", query=ALL, overwrite=False, **kw):
    kw.setdefault("samples_per_shard", 7)
    return build_shard_set(ws, ShardSetSpec(name, query, **kw), overwrite=overwrite)


def test_round_trip_pixels_and_metadata(shard_ws):
    path, m, built = build(shard_ws)
    n_images = db.query(shard_ws, "SELECT count(*) FROM images")[1][0][0]
    assert built and m.samples == n_images == sum(s.samples for s in m.shards)
    store = ImageStore(shard_ws.store_dir)
    cols, rows = db.query(shard_ws, "SELECT image_id, modality, body_part, patient_key, rows, cols, bits FROM images")
    catalog = {r[0]: dict(zip(cols, r)) for r in rows}
    labels = {}
    for image_id, task, value in db.query(shard_ws, "SELECT image_id, task, value FROM labels")[1]:
        labels.setdefault(image_id, {})[task] = value
    seen = set()
    for sample in ShardStream(str(path), shuffle_buffer=1):
        key = sample["__key__"]
        seen.add(key)
        assert "." not in key
        assert sample["image"].dtype == store.get(key).dtype and np.array_equal(sample["image"], store.get(key))
        meta = sample["meta"]
        for col in ("modality", "body_part", "patient_key", "rows", "cols", "bits"):
            assert meta[col] == catalog[key][col]
        assert meta["labels"] == labels.get(key, {})
    assert seen == set(catalog)


def test_png_payload_is_the_store_object_unchanged(shard_ws):
    path, m, _ = build(shard_ws)
    with tarfile.open(path.parent / m.shards[0].file) as tar:
        member = next(x for x in tar if x.name.endswith(".png"))
        data = tar.extractfile(member).read()
        assert (member.mtime, member.uid, member.uname) == (0, 0, "")
    key = member.name.split(".")[0]
    assert data == ImageStore(shard_ws.store_dir).path(key).read_bytes()


def test_same_selection_gives_byte_identical_shards(shard_ws):
    p1, m1, _ = build(shard_ws, "a", seed=3)
    p2, m2, _ = build(shard_ws, "b", seed=3)
    assert [(s.file, s.sha256) for s in m1.shards] == [(s.file, s.sha256) for s in m2.shards]
    _, m3, _ = build(shard_ws, "c", seed=4)
    assert [s.sha256 for s in m3.shards] != [s.sha256 for s in m1.shards]


def test_a_shard_mixes_sources_and_patients(shard_ws):
    path, m, _ = build(shard_ws, samples_per_shard=20)
    patients = {json.loads(s)["patient_key"] for s in _jsons(path.parent / m.shards[0].file)}
    assert len(patients) > 3


def _jsons(tar_path):
    with tarfile.open(tar_path) as tar:
        return [tar.extractfile(x).read() for x in tar if x.name.endswith(".json")]


def test_shard_sets_are_immutable(shard_ws):
    build(shard_ws, "v1")
    assert build(shard_ws, "v1")[2] is False  # same selection: up to date, nothing rewritten
    with pytest.raises(ShardError, match="exists with another selection"):
        build(shard_ws, "v1", query="SELECT image_id FROM images WHERE bits = 8")
    _, m, built = build(shard_ws, "v1", query="SELECT image_id FROM images WHERE bits = 8", overwrite=True)
    assert built and m.counts["bits"] == {"8": m.samples}


def test_verify_catches_flipped_byte_truncation_and_missing_shard(shard_ws):
    path, m, _ = build(shard_ws)
    assert verify(path) == []
    first, second, third = (path.parent / s.file for s in m.shards[:3])
    data = bytearray(first.read_bytes())
    data[len(data) // 2] ^= 0xFF
    first.write_bytes(bytes(data))
    second.write_bytes(second.read_bytes()[:-3000])
    third.unlink()
    problems = {}
    for p in verify(path):
        problems.setdefault(p.shard, []).append(p.problem)
    assert set(problems) == {first.name, second.name, third.name}
    assert any("sha256" in p for p in problems[first.name]) and problems[third.name] == ["missing"]
    assert any("size" in p for p in problems[second.name])


def test_bad_input_leaves_no_partial_shard_set(shard_ws):
    with pytest.raises(SelectionError, match="no images"):
        build(shard_ws, "e", query="SELECT image_id FROM images WHERE false")
    with pytest.raises(SelectionError, match="image_id"):
        build(shard_ws, "e", query="SELECT modality FROM images")
    with pytest.raises(SelectionError, match="query failed"):
        build(shard_ws, "e", query="SELEC image_id FROM images")
    assert not (shard_ws.root / "shards").exists() or not any((shard_ws.root / "shards").iterdir())


def test_an_object_missing_from_the_store_is_left_out_with_a_reason(shard_ws):
    victim, store_path = db.query(shard_ws, "SELECT image_id, store_path FROM images LIMIT 1")[1][0]
    (shard_ws.root / store_path).unlink()
    _, m, _ = build(shard_ws, "e")
    everything = db.query(shard_ws, "SELECT count(*) FROM images WHERE NOT excluded AND NOT held_out")[1][0][0]
    assert m.samples == everything - 1 and m.unreadable == {"missing_object": 1}
    assert db.query(shard_ws, "SELECT image_id, stage, reason FROM unreadable")[1] == [(victim, "shards", "missing_object")]


def test_readers_get_disjoint_samples_and_equal_counts(shard_ws):
    path, m, _ = build(shard_ws, samples_per_shard=5)
    for world in (2, 3):
        keys = [[s["__key__"] for s in ShardStream(str(path), rank=r, world_size=world)] for r in range(world)]
        assert len({len(k) for k in keys}) == 1 and len(keys[0]) > 0
        flat = [k for ks in keys for k in ks]
        assert len(flat) == len(set(flat))
        assert len(flat) >= m.samples * 0.6


def test_fewer_shards_than_readers_still_balanced(shard_ws):
    path, m, _ = build(shard_ws, samples_per_shard=10_000)
    assert len(m.shards) == 1
    keys = [[s["__key__"] for s in ShardStream(str(path), rank=r, world_size=2)] for r in range(2)]
    assert len(keys[0]) == len(keys[1]) == m.samples // 2 and not set(keys[0]) & set(keys[1])


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_continues_exactly(shard_ws, workers):
    path, _, _ = build(shard_ws, samples_per_shard=9)
    loader = build_loader(str(path), batch_size=4, num_workers=workers, collate=lambda xs: [x["__key__"] for x in xs])
    full = list(loader)
    assert len(full) == len(loader.dataset)
    loader.dataset.set_epoch(0, step=5)
    assert list(loader) == full[5:]
    loader.dataset.set_epoch(1)
    assert list(loader) != full


def test_manifest_records_what_was_read(shard_ws):
    path, m, _ = build(shard_ws)
    again = Manifest.read(path)
    assert again.query == ALL and again.catalog_snapshot["parts"] == len(list(shard_ws.parts_dir.iterdir()))
    assert all(len(s.sha256) == 64 for s in again.shards)
    assert hashlib.sha256((path.parent / m.shards[0].file).read_bytes()).hexdigest() == m.shards[0].sha256


def test_stream_from_an_object_store_url(shard_ws):
    import fsspec

    path, m, _ = build(shard_ws, "remote")
    fs = fsspec.filesystem("memory")
    for f in [path] + [path.parent / s.file for s in m.shards]:
        fs.pipe(f"/shard-bucket/remote/{f.name}", f.read_bytes())
    keys = sorted(s["__key__"] for s in ShardStream("memory://shard-bucket/remote/manifest.json"))
    local = sorted(s["__key__"] for s in ShardStream(str(path)))
    assert keys == local and len(keys) == m.samples


def test_pipe_urls(shard_ws):
    path, m, _ = build(shard_ws, "piped")
    stream = ShardStream(str(path), base=f"pipe:cat {path.parent}/{{}}")
    assert sorted(s["__key__"] for s in stream) == sorted(s["__key__"] for s in ShardStream(str(path)))
