"""The resolution policy of a shard set (--max-side) and the fast decode of the store's PNG layout."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from catalog import db
from catalog.pixels import decode_png, encode_png
from catalog.store import ImageStore
from shards.decode import decode_payload
from shards.reader import ShardStream
from shards.resample import fit_max_side, reduced_size
from shards.spec import ShardSetSpec
from shards.writer import ShardError, build_shard_set

ALL = "SELECT image_id FROM images"


@pytest.mark.parametrize("dtype, shape", [(np.uint8, (37, 53)), (np.uint16, (64, 17)), (np.uint16, (1, 300))])
def test_fast_decode_equals_the_reference_decoder(dtype, shape):
    pixels = np.random.default_rng(0).integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype)
    png = encode_png(pixels)
    out = decode_payload(png)
    assert out.dtype == dtype and np.array_equal(out, pixels) and np.array_equal(out, decode_png(png))
    out[0, 0] = 1  # writable, as torch.from_numpy wants


def test_another_writers_png_goes_to_the_reference_decoder():
    pixels = (np.arange(40 * 30, dtype=np.uint16).reshape(40, 30) * 50)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", optimize=True)  # Pillow's adaptive filters, not "up"
    assert np.array_equal(decode_payload(buf.getvalue()), pixels)


def test_fit_max_side_keeps_depth_and_antialiases():
    stripes = np.zeros((400, 300), np.uint16)
    stripes[:, ::2] = 60000  # one-pixel stripes: a filter without antialiasing would keep some at full contrast
    small = fit_max_side(stripes, 100)
    assert small.dtype == np.uint16 and small.shape == (100, 75) == reduced_size(400, 300, 100)
    assert abs(float(small.mean()) - 30000) < 200 and small.std() < 0.02 * 30000
    ramp = np.linspace(0, 65535, 512 * 512).reshape(512, 512).astype(np.uint16)
    assert len(np.unique(fit_max_side(ramp, 128))) > 10000  # 16-bit levels survive: far more than 256
    assert fit_max_side(ramp, 512) is ramp


def test_a_set_with_max_side_reduces_large_images_and_records_their_size(shard_ws):
    cols, rows = db.query(shard_ws, "SELECT image_id, rows, cols, bits, pixel_spacing_row FROM images")
    catalog = {r[0]: dict(zip(cols, r)) for r in rows}
    assert any(max(c["rows"], c["cols"]) > 64 for c in catalog.values())
    path, m, _ = build_shard_set(shard_ws, ShardSetSpec("small", ALL, samples_per_shard=50, max_side=64))
    reduced = 0
    store = ImageStore(shard_ws.store_dir)
    for sample in ShardStream(str(path), shuffle_buffer=1):
        meta, image, cat = sample["meta"], sample["image"], catalog[sample["__key__"]]
        assert (meta["original_rows"], meta["original_cols"]) == (cat["rows"], cat["cols"])
        assert image.shape == (meta["rows"], meta["cols"]) == reduced_size(cat["rows"], cat["cols"], 64)
        assert image.dtype == (np.uint16 if cat["bits"] == 16 else np.uint8)
        assert meta["resample_factor"] == pytest.approx(max(image.shape) / max(cat["rows"], cat["cols"]))
        if image.shape != (cat["rows"], cat["cols"]):
            reduced += 1
            assert store.get(sample["__key__"]).shape == (cat["rows"], cat["cols"])  # the store keeps full size
            if cat["pixel_spacing_row"]:
                assert meta["pixel_spacing_row"] == pytest.approx(cat["pixel_spacing_row"] * cat["rows"] / image.shape[0])
    assert reduced == m.resample["images_reduced"] > 0
    assert m.resample["max_side"] == 64 and 0 < m.resample["min_factor"] < 1


def test_the_resolution_is_part_of_a_sets_identity(shard_ws):
    build_shard_set(shard_ws, ShardSetSpec("r", ALL, samples_per_shard=50, max_side=64))
    assert build_shard_set(shard_ws, ShardSetSpec("r", ALL, samples_per_shard=50, max_side=64))[2] is False  # up to date
    with pytest.raises(ShardError, match="at another resolution"):
        build_shard_set(shard_ws, ShardSetSpec("r", ALL, samples_per_shard=50, max_side=128))
    path, m, built = build_shard_set(shard_ws, ShardSetSpec("r", ALL, samples_per_shard=50, max_side=0), overwrite=True)
    assert built and m.resample == {}
    meta = next(s["meta"] for s in ShardStream(str(path), shuffle_buffer=1))
    assert "original_rows" not in meta  # a set at stored size: the catalog's metadata as it is
    with pytest.raises(ShardError, match="max-side"):
        build_shard_set(shard_ws, ShardSetSpec("bad", ALL, max_side=8))


@pytest.mark.prefect
def test_cli_max_side(shard_ws, prefect_harness):
    from typer.testing import CliRunner

    from flows.cli import app

    runner = CliRunner()
    r = runner.invoke(app, ["shards", "build", "cli", "--query", ALL, "--max-side", "64", "--samples-per-shard", "500",
                            "--workspace", str(shard_ws.root)])
    assert r.exit_code == 0, r.output
    manifest = json.loads((shard_ws.root / "shards" / "cli" / "manifest.json").read_text())
    assert manifest["resample"]["max_side"] == 64 and manifest["resample"]["images_reduced"] > 0
    assert "longer side at most 64 px" in r.output
