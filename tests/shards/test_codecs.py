"""Payload codecs (issue 29): HTJ2K sets are bit-exact to the store, verify, and stream the same pixels and crops as PNG."""

import json
import tarfile

import numpy as np
import pytest
import torch

from catalog.errors import OrthoError
from catalog.store import ImageStore
from shards.codecs import BY_EXT, CODECS, get_codec, payload_shape
from shards.reader import ShardStream
from shards.verify import verify
from shards.spec import ShardSetSpec
from shards.writer import ShardError, build_shard_set

ALL = "SELECT image_id FROM images"


@pytest.mark.parametrize("name", sorted(CODECS))
@pytest.mark.parametrize("dtype,shape", [(np.uint16, (61, 97)), (np.uint8, (40, 33)), (np.uint16, (1, 1)),
                                         (np.uint16, (3, 700))])
def test_every_codec_round_trips_full_range_pixels_at_their_depth(name, dtype, shape):
    rng = np.random.default_rng(shape[0])
    pixels = rng.integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype)
    pixels.flat[0] = np.iinfo(dtype).max  # the top level survives too
    codec = CODECS[name]
    data = codec.encode(pixels)
    back = BY_EXT[codec.ext].decode(data)
    assert back.dtype == dtype and np.array_equal(back, pixels)
    assert payload_shape(codec.ext, data) == shape


def test_unknown_codec_is_a_users_mistake():
    with pytest.raises(OrthoError, match="unknown codec 'jpeg'.*png, htj2k"):
        get_codec("jpeg")


def _payloads(manifest_path, m):
    """{key: (extension, bytes)} of every sample, read with tarfile (not the project's reader)."""
    out = {}
    for entry in m.shards:
        with tarfile.open(manifest_path.parent / entry.file) as tar:
            for member in tar:
                key, _, ext = member.name.partition(".")
                if ext != "json":
                    out[key] = (ext, tar.extractfile(member).read())
    return out


def test_htj2k_set_decodes_every_sample_bit_exactly_to_the_stores_pixels(shard_ws):
    path, m, built = build_shard_set(shard_ws, ShardSetSpec("h", ALL, samples_per_shard=9, codec="htj2k", max_side=0))
    assert built and m.codec["name"] == "htj2k" and m.codec["ext"] == "j2c"
    assert "openjph" in m.codec["encoder"] and "imagecodecs" in m.codec["encoder"]
    assert json.loads((path).read_text())["codec"]["name"] == "htj2k"
    store = ImageStore(shard_ws.store_dir)
    payloads = _payloads(path, m)
    assert len(payloads) == m.samples and {ext for ext, _ in payloads.values()} == {"j2c"}
    depths = set()
    for key, (_, data) in payloads.items():
        pixels = store.get(key)
        decoded = get_codec("htj2k").decode(data)
        assert decoded.dtype == pixels.dtype and np.array_equal(decoded, pixels), key
        depths.add(pixels.dtype)
    assert depths == {np.dtype(np.uint8), np.dtype(np.uint16)}  # both depths exercised
    assert verify(path) == []


def test_verify_says_when_payloads_do_not_match_the_manifests_codec(shard_ws):
    path, m, _ = build_shard_set(shard_ws, ShardSetSpec("h", ALL, samples_per_shard=50, codec="htj2k"))
    doc = json.loads(path.read_text())
    doc["codec"] = {"name": "png", "ext": "png"}
    path.write_text(json.dumps(doc))
    problems = verify(path)
    assert problems and all("lack a png or json part" in p.problem for p in problems)


def test_verify_catches_a_corrupt_htj2k_payload(shard_ws, tmp_path):
    path, m, _ = build_shard_set(shard_ws, ShardSetSpec("h", ALL, samples_per_shard=500, codec="htj2k"))
    shard = path.parent / m.shards[0].file
    with tarfile.open(shard) as tar:
        members = [(mm, tar.extractfile(mm).read()) for mm in tar]
    import io

    with tarfile.open(shard, "w", format=tarfile.USTAR_FORMAT) as tar:
        for i, (member, data) in enumerate(members):
            if member.name.endswith(".j2c") and i == 0:
                data = data[:40]  # a truncated codestream
                member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    problems = verify(path)
    assert any("unreadable" in p.problem for p in problems)


def test_another_codec_is_another_set_unless_overwritten(shard_ws):
    build_shard_set(shard_ws, ShardSetSpec("s", ALL, samples_per_shard=50))
    with pytest.raises(ShardError, match="with codec png"):
        build_shard_set(shard_ws, ShardSetSpec("s", ALL, samples_per_shard=50, codec="htj2k"))
    _, m, built = build_shard_set(shard_ws, ShardSetSpec("s", ALL, samples_per_shard=50, codec="htj2k"), overwrite=True)
    assert built and m.codec["name"] == "htj2k"
    _, _, again = build_shard_set(shard_ws, ShardSetSpec("s", ALL, samples_per_shard=50, codec="htj2k"))
    assert not again


@pytest.mark.slow
def test_png_and_htj2k_sets_stream_identical_pixels_and_identical_crops(shard_ws):
    from training.config import load_config
    from training.data import build_stream

    png, mp, _ = build_shard_set(shard_ws, ShardSetSpec("p", ALL, samples_per_shard=9, seed=4, max_side=64))
    htj, mh, _ = build_shard_set(shard_ws, ShardSetSpec("h", ALL, samples_per_shard=9, seed=4, max_side=64, codec="htj2k"))
    assert mh.bytes < mp.bytes  # smaller payloads, as measured on real radiographs (docs/benchmarks.md)
    a = list(ShardStream(str(png), shuffle_buffer=50, seed=1))
    b = list(ShardStream(str(htj), shuffle_buffer=50, seed=1))
    assert [s["__key__"] for s in a] == [s["__key__"] for s in b]
    for x, y in zip(a, b):
        assert x["image"].dtype == y["image"].dtype and np.array_equal(x["image"], y["image"])
        assert x["meta"] == y["meta"]
    for device in ("loader", "gpu"):
        cfg = load_config(None, [f"crops.device={device}", "crops.global_size=32", "crops.local_size=16",
                                 "crops.local_crops=2", "optim.batch_size=4", "train.num_workers=0"])
        batches = [list(build_stream(cfg, str(p), 0.5, 0.25, 16)) for p in (png, htj)]
        assert len(batches[0]) == len(batches[1]) > 0
        for x, y in zip(*batches):
            assert x["keys"] == y["keys"]
            for k in ("global", "local", "images", "params", "masks"):
                if k in x:
                    assert torch.equal(x[k], y[k]), (device, k)


def test_evaluation_reads_htj2k_sets_as_png_sets(shard_ws):
    from evaluation.data import ShardImages

    png, _, _ = build_shard_set(shard_ws, ShardSetSpec("pe", ALL, samples_per_shard=50, evaluation=True))
    htj, _, _ = build_shard_set(shard_ws, ShardSetSpec("he", ALL, samples_per_shard=50, evaluation=True, codec="htj2k"))
    a, b = ShardImages(png), ShardImages(htj)
    assert a.pixels.keys() == b.pixels.keys() and a.meta == b.meta
    assert all(np.array_equal(a.get(k), b.get(k)) and a.get(k).dtype == b.get(k).dtype for k in a.pixels)


def test_the_documented_plain_webdataset_decoder_reads_htj2k_at_full_depth(shard_ws):
    import imagecodecs
    import webdataset as wds

    path, m, _ = build_shard_set(shard_ws, ShardSetSpec("h", ALL, samples_per_shard=500, codec="htj2k"))
    store = ImageStore(shard_ws.store_dir)
    # docs/training.md, "Reading shard sets without this project": this line, as written there
    ds = wds.WebDataset(str(path.parent / m.shards[0].file), shardshuffle=False).decode(
        wds.handle_extension("j2c", imagecodecs.htj2k_decode))
    samples = list(ds)
    assert len(samples) == m.shards[0].samples
    for s in samples:
        assert s["j2c"].dtype == store.get(s["__key__"]).dtype and np.array_equal(s["j2c"], store.get(s["__key__"]))
    path, m, _ = build_shard_set(shard_ws, ShardSetSpec("p", ALL, samples_per_shard=500, max_side=0))
    ds = wds.WebDataset(str(path.parent / m.shards[0].file), shardshuffle=False).decode(
        wds.handle_extension("png", imagecodecs.png_decode))
    for s in ds:
        assert s["png"].dtype == store.get(s["__key__"]).dtype and np.array_equal(s["png"], store.get(s["__key__"]))


@pytest.mark.slow
def test_htj2k_set_decoded_on_the_device_gives_the_crops_of_worker_decode(shard_ws):
    """crops.decode=device on a machine without a GPU: payloads travel compressed and the CPU fallback decodes."""
    from training.config import load_config
    from training.data import build_stream
    from training.device_crops import DeviceCrops

    htj, _, _ = build_shard_set(shard_ws, ShardSetSpec("h", ALL, samples_per_shard=9, seed=4, max_side=64, codec="htj2k"))
    out = {}
    for decode in ("workers", "device"):
        cfg = load_config(None, ["crops.device=gpu", f"crops.decode={decode}", "crops.global_size=32",
                                 "crops.local_size=16", "crops.local_crops=2", "optim.batch_size=4",
                                 "train.num_workers=0"])
        stream = build_stream(cfg, str(htj), 0.5, 0.25, 16, device="cpu")
        assert stream.decode == (decode == "workers")
        crops = DeviceCrops(cfg.crops, 0.5, 0.25)
        out[decode] = [crops(b) for b in stream]
    assert len(out["workers"]) == len(out["device"]) > 0
    for a, b in zip(out["workers"], out["device"]):
        assert a["keys"] == b["keys"] and torch.equal(a["masks"], b["masks"])
        assert torch.allclose(a["global"], b["global"], atol=1e-4) and torch.allclose(a["local"], b["local"], atol=1e-4)


def test_cli_codec_builds_verifies_and_shows_htj2k(shard_ws, prefect_harness):
    from typer.testing import CliRunner

    from flows.cli import app

    runner, ws = CliRunner(), ["--workspace", str(shard_ws.root)]
    r = runner.invoke(app, ["shards", "build", "cj", "--query", ALL, "--codec", "htj2k", "--samples-per-shard", "500",
                            *ws])
    assert r.exit_code == 0, r.output
    assert "codec: htj2k (.j2c, openjph" in r.output
    r = runner.invoke(app, ["shards", "verify", "cj", *ws])
    assert r.exit_code == 0 and "ok: every shard" in r.output, r.output
    r = runner.invoke(app, ["shards", "build", "cx", "--query", ALL, "--codec", "webp", *ws])
    assert r.exit_code == 2 and "unknown codec 'webp'" in r.output and "Traceback" not in r.output


def test_pipeline_file_codec_is_checked_when_read(tmp_path):
    from flows.pipeline import Pipeline, PipelineError

    spec = tmp_path / "p.yaml"
    spec.write_text("shards:\n  - {name: k, query: 'SELECT image_id FROM images', codec: jpeg}\n")
    with pytest.raises(PipelineError, match=r"shards\[0\]: unknown codec 'jpeg': use one of png, htj2k"):
        Pipeline.load(spec)


def test_htj2k_is_bit_exact_and_smaller_on_real_radiographs_and_dicom():
    """Real pixels as ingest stores them: 8-bit knee radiographs, 12-bit knee MRI, a 10-bit computed radiograph."""
    import warnings

    import pydicom

    from catalog.pixels import decode_png
    from ingest.pixels import to_storable
    from tests.shared_data import shared_data

    images = [decode_png(p.read_bytes()) for p in sorted((shared_data("knee-xray-kl") / "train").rglob("*.png"))[:6]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for p in sorted((shared_data("dicom") / "Knee" / "T1").glob("*.dcm"))[:3]:
            images.append(to_storable(pydicom.dcmread(p).pixel_array).pixels)
    assert {a.dtype for a in images} == {np.dtype(np.uint8), np.dtype(np.uint16)}
    png, htj2k = CODECS["png"], CODECS["htj2k"]
    for a in images:
        data = htj2k.encode(a)
        assert np.array_equal(htj2k.decode(data), a) and htj2k.decode(data).dtype == a.dtype
        assert len(data) < len(png.encode(a))


@pytest.mark.parametrize("name", sorted(CODECS))
def test_a_payload_declaring_more_than_the_pixel_budget_is_refused_from_its_header(name):
    """The device decode path allocates what payload_shape says: a header declaring 60000 x 60000 is refused there,
    before any decoder runs (catalog/pixel_budget.py), like the CPU decode path."""
    import struct

    from catalog.pixel_budget import PixelsRefused

    codec = CODECS[name]
    data = bytearray(codec.encode(np.arange(64 * 48, dtype=np.uint16).reshape(64, 48)))
    if codec.ext == "png":
        data[16:24] = struct.pack(">II", 60000, 60000)  # IHDR width, height
    else:
        data[8:16] = struct.pack(">II", 60000, 60000)  # SIZ Xsiz, Ysiz
    with pytest.raises(PixelsRefused) as refused:
        payload_shape(codec.ext, bytes(data))
    assert refused.value.reason == "absurd_dimensions"
    with pytest.raises(PixelsRefused):
        BY_EXT[codec.ext].decode(bytes(data))
