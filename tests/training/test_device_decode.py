"""Payloads decoded on the training device (crops.decode): the same crops as worker decode, and the CPU fallback."""

import numpy as np
import pytest
import torch

from catalog.pixels import robust_range
from shards.codecs import CODECS
from shards.device_decode import BatchDecoder
from training.augment import PARAMS, CollatePlans, CropPlan
from training.data import TrainingError, decode_on_device
from training.device_crops import DeviceCrops, device_robust_range

from tests.training.test_device_crops import crops_cfg, radiographs

WINDOW = [PARAMS.index("window_lo"), PARAMS.index("window_hi")]


def compressed(samples, codec="htj2k"):
    c = CODECS[codec]
    return [{"__key__": s["__key__"], "payload": c.encode(s["image"]), "ext": c.ext, "shape": s["image"].shape}
            for s in samples]


def test_device_robust_range_is_catalogs_robust_range():
    samples = radiographs(5) + [{"__key__": "flat", "image": np.full((90, 70), 700, np.uint16)},
                                {"__key__": "big", "image": np.random.default_rng(1).integers(0, 4096, (600, 530))
                                 .astype(np.uint16)}]
    batch = CollatePlans(8, [0.1, 0.5], 0.5)([CropPlan(crops_cfg())(s) for s in samples])
    got = device_robust_range(batch["images"], batch["sizes"])
    want = torch.tensor([robust_range(s["image"]) for s in samples], dtype=torch.float64)
    assert torch.allclose(got, want, rtol=1e-6, atol=1e-3)


@pytest.mark.parametrize("codec", ["htj2k", "png"])
def test_compressed_batches_give_the_crops_of_worker_decoded_ones(codec):
    cfg, samples = crops_cfg(noise_prob=1.0), radiographs(6)
    collate = CollatePlans(8, [0.1, 0.5], 0.5)
    decoded = collate([CropPlan(cfg)(s) for s in samples])
    packed = collate([CropPlan(cfg)(s) for s in compressed(samples, codec)])
    assert "images" not in packed and len(packed["payloads"]) == len(samples)
    crops = DeviceCrops(cfg, 0.5, 0.25)
    unpacked = crops.decoded(packed)
    assert crops.decoder.backend == "cpu"  # no GPU here: the CPU fallback decoder
    assert torch.equal(unpacked["images"], decoded["images"]) and torch.equal(unpacked["sizes"], decoded["sizes"])
    assert torch.allclose(unpacked["params"][..., WINDOW], decoded["params"][..., WINDOW], rtol=1e-6, atol=1e-3)
    other = [i for i in range(len(PARAMS)) if i not in WINDOW]
    assert torch.equal(unpacked["params"][..., other], decoded["params"][..., other])
    a, b = crops(decoded), crops(packed)
    for k in ("global", "local"):
        assert torch.allclose(a[k], b[k], atol=1e-4), k
    assert torch.equal(a["masks"], b["masks"]) and a["keys"] == b["keys"]


def test_batch_decoder_pads_and_keeps_both_depths_on_cpu():
    samples = radiographs(3)  # one of them 8-bit
    batch = BatchDecoder("cpu")([p["payload"] for p in compressed(samples)], ["j2c"] * 3)
    assert batch.dtype == torch.uint16
    for img, s in zip(batch, samples):
        h, w = s["image"].shape
        assert np.array_equal(img[:h, :w].numpy(), s["image"].astype(np.uint16))
        assert not img[h:].numpy().any() and not img[:, w:].numpy().any()


def test_auto_decodes_on_the_device_only_for_htj2k_with_cuda_and_nvimgcodec(monkeypatch):
    import training.data as data

    gpu = crops_cfg(device="gpu")
    htj2k, png = {"name": "htj2k"}, {"name": "png"}
    monkeypatch.setattr(data, "gpu_decode_available", lambda: False)
    assert not decode_on_device(gpu, htj2k, "cpu")
    assert not decode_on_device(gpu, htj2k, "cuda")  # no nvImageCodec: the workers decode (the fallback)
    monkeypatch.setattr(data, "gpu_decode_available", lambda: True)
    assert decode_on_device(gpu, htj2k, "cuda")
    assert not decode_on_device(gpu, png, "cuda")  # PNG is CPU-only in NVIDIA's decoders
    assert not decode_on_device(gpu, htj2k, "cpu")
    assert not decode_on_device(crops_cfg(device="gpu", decode="workers"), htj2k, "cuda")
    assert decode_on_device(crops_cfg(device="gpu", decode="device"), png, "cpu")  # asked for: the CPU fallback decoder
    assert not decode_on_device(crops_cfg(device="loader"), htj2k, "cuda")
    with pytest.raises(TrainingError, match="crops.device=gpu"):
        decode_on_device(crops_cfg(device="loader", decode="device"), htj2k, "cuda")


def test_nvimgcodec_decodes_our_htj2k_payloads_exactly_through_the_batch_decoder():
    """nvImageCodec's own path with its CPU backend (no GPU here): the decode parameters keep one grey plane at its
    depth, and the batch comes out as the CPU codec's. On CUDA the same calls run on nvJPEG2000."""
    from shards.device_decode import decode_params, nvimgcodec_module

    nvimgcodec = nvimgcodec_module()
    if nvimgcodec is None:
        pytest.skip("nvidia-nvimgcodec-cu12 is not installed (the `gpu` extra)")
    samples = radiographs(4)  # one of them 8-bit
    payloads = [p["payload"] for p in compressed(samples)]
    via_nv = BatchDecoder("cpu")
    cpu_only = nvimgcodec.Decoder(device_id=nvimgcodec.NVIMGCODEC_DEVICE_CPU_ONLY,
                                  backends=[nvimgcodec.Backend(nvimgcodec.BackendKind.CPU_ONLY)])
    via_nv._nv = cpu_only, decode_params(nvimgcodec)  # the GPU decoder's seat, taken by its CPU twin
    assert via_nv.backend == "nvimgcodec"
    assert torch.equal(via_nv(payloads, ["j2c"] * 4), BatchDecoder("cpu")(payloads, ["j2c"] * 4))
