"""bench/gpu_pretrain.py end to end on CPU at tiny sizes: both crop paths, both decode paths, MFU, the real run."""

import json

import pytest

from bench.gpu_pretrain import main, step_flops
from training.config import load_config


@pytest.mark.slow
def test_gpu_benchmark_smoke_run_on_cpu(tmp_path, phantom_manifest):
    _, manifest = phantom_manifest
    out = tmp_path / "gpu.json"
    results = main(["--models", "vit_pico_patch8_dinov3", "--batch", "4", "--steps", "2", "--warmup", "1",
                    "--size", "64", "--images", "16", "--workers", "0", "--peak-tflops", "1", "--real-steps", "3",
                    "--real-batch", "8", "--knee-manifest", str(manifest), "--tiny", "--out", str(out),
                    "--decode", "workers,device"])
    rows = results["throughput"]
    assert [(r["crops"], r["decode"], r["decoder"]) for r in rows] == [
        ("loader", "workers", "workers"), ("gpu", "workers", "workers"), ("gpu", "device", "cpu")]  # no GPU: fallback
    assert {r["codec"] for r in rows} == {"htj2k"}  # device decode needs HTJ2K shards
    for r in rows:
        assert r["images_per_s"] > 0 and r["gpu_images_per_s"] >= r["images_per_s"] and 0 <= r["loader_wait_frac"] < 1
        assert r["mfu"] == pytest.approx(r["gflops_per_image"] * 1e9 * r["images_per_s"] / 1e12)
        assert r["precision"] == "fp32" and r["device"] == "cpu"
    run = results["real_run"]
    assert run["first"]["step"] == 1 and run["last"]["step"] == 3 and len(run["curve"]) == 3
    assert json.loads(out.read_text())["throughput"][1]["crops"] == "gpu"


def test_step_flops_count_forward_backward_and_teacher():
    import torch

    from training.model import build_ssl_models

    cfg = load_config("cpu-tiny")
    more = load_config("cpu-tiny", ["crops.local_crops=10"])
    with torch.device("meta"):
        backbone = build_ssl_models(cfg, 64)[0].backbone
    params = sum(p.numel() for b in backbone.blocks for p in b.parameters() if p.dim() == 2)  # the matmul weights
    tokens = (32 // 8) ** 2 + backbone.num_prefix_tokens
    # 6 more local crops: forward + backward (3 x 2 FLOPs per weight and token), attention and the heads on top
    extra = step_flops(more) - step_flops(cfg)
    assert 1.0 < extra / (6 * 3 * 2 * params * tokens) < 1.2
