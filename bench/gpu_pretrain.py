"""Pretraining throughput and peak memory for ViT-S/B/L with DINOv3 multi-crop, on synthetic shards.

    python bench/gpu_pretrain.py                      # CUDA: ViT-S/B/L, 2x224 + 8x96, bf16
    python bench/gpu_pretrain.py --models vit_small_patch16_dinov3 --batch 8 --steps 3   # a CPU smoke run

Synthetic 16-bit shards (512x512 noise with structure) are written on the spot in a temporary
folder and streamed through the real loader (multi-crop in the workers) into the real training
step (student + EMA teacher, DINO + iBOT + KoLeo, AdamW). For each model the largest batch from
--batch that fits is used (an OOM steps down). Reference: DINOv3's ViT-L/16 recipe runs about
112 images/s per H100 (2048 per step on 32 GPUs at 0.57 s/step); the ratio column compares to it.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from catalog.files import file_sha256  # noqa: E402
from catalog.pixels import encode_png  # noqa: E402
from shards.manifest import Manifest, ShardEntry  # noqa: E402
from training.config import load_config  # noqa: E402
from training.data import build_stream, make_loader  # noqa: E402
from training.distributed import setup_distributed  # noqa: E402
from training.schedules import build_schedules  # noqa: E402
from training.step import train_step  # noqa: E402
from training.trainer import build_learner  # noqa: E402

DINOV3_VITL_PER_GPU = 2048 / 32 / 0.57  # images/s per H100 in the DINOv3 recipe


def synthetic_shards(folder: Path, images: int, size: int = 512, per_shard: int = 64) -> Path:
    rng = np.random.default_rng(0)
    entries = []
    yy, xx = np.mgrid[0:size, 0:size]
    for s in range(0, images, per_shard):
        path = folder / f"shard-{s // per_shard:06d}.tar"
        with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
            for i in range(s, min(s + per_shard, images)):
                blob = np.sin(xx / rng.uniform(8, 64)) * np.cos(yy / rng.uniform(8, 64))
                img = ((blob + 1) * 16000 + rng.normal(0, 800, (size, size))).clip(0, 65535).astype(np.uint16)
                for ext, data in (("png", encode_png(img)), ("json", json.dumps({"i": i}).encode())):
                    info = tarfile.TarInfo(f"{i:012x}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        entries.append(ShardEntry(path.name, min(per_shard, images - s), path.stat().st_size,
                                  file_sha256(path)))
    manifest = Manifest(name="synthetic", created="", query="synthetic", include_excluded=False, seed=0,
                        selection_sha256="", catalog_snapshot={}, samples=images,
                        bytes=sum(e.bytes for e in entries), shards=entries)
    manifest.write(folder / "manifest.json")
    return folder / "manifest.json"


def measure(model: str, batch: int, steps: int, warmup: int, manifest: Path, workers: int, extra: list[str]) -> dict:
    cfg = load_config("vits16", [f"model.name={model}", f"optim.batch_size={batch}", f"train.steps={warmup + steps}",
                                 f"train.num_workers={workers}", "train.verify_shards=false", *extra])
    ctx = setup_distributed(cfg["train"]["device"])
    learner, _ = build_learner(cfg, ctx)
    spec = learner.student_module.spec
    stream = build_stream(cfg, str(manifest), spec.mean[0], spec.std[0], spec.patch_size)
    schedules = build_schedules(cfg)
    if ctx.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    step, t0, loader_wait = 0, None, 0.0
    while step < warmup + steps:
        stream.set_epoch(step)
        it = iter(make_loader(stream, workers))
        while step < warmup + steps:
            w0 = time.perf_counter()
            try:
                batch_data = next(it)
            except StopIteration:
                break
            if t0 is not None:
                loader_wait += time.perf_counter() - w0
            train_step(learner, batch_data, step, schedules, log=False)
            step += 1
            if step == warmup:
                if ctx.device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
    if ctx.device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**30 if ctx.device.type == "cuda" else float("nan")
    params = sum(p.numel() for p in learner.student_module.backbone.parameters()) / 1e6
    return {"model": model, "params_m": params, "batch": batch, "images_per_s": steps * batch / elapsed,
            "step_s": elapsed / steps, "loader_wait_frac": loader_wait / elapsed, "peak_gb": peak,
            "device": str(ctx.device), "precision": "bf16" if learner.autocast_dtype else "fp32"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="vit_small_patch16_dinov3,vit_base_patch16_dinov3,vit_large_patch16_dinov3")
    ap.add_argument("--batch", default="256,192,128,96,64,32", help="batch sizes to try, largest first")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--workers", type=int, default=min(16, torch.multiprocessing.cpu_count()))
    ap.add_argument("--images", type=int, default=2048)
    ap.add_argument("--out", help="write the rows as JSON here")
    ap.add_argument("overrides", nargs="*", help="config overrides (e.g. train.compile=true)")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        manifest = synthetic_shards(Path(tmp), args.images)
        for model in args.models.split(","):
            for batch in map(int, args.batch.split(",")):
                try:
                    rows.append(measure(model, batch, args.steps, args.warmup, manifest, args.workers,
                                        args.overrides))
                    print(json.dumps(rows[-1]), flush=True)
                    break
                except (torch.OutOfMemoryError, RuntimeError) as e:
                    if "out of memory" not in str(e).lower():
                        raise
                    print(f"{model}: batch {batch} does not fit, trying smaller", flush=True)
                finally:
                    if torch.cuda.is_available():
                        torch.cuda.empty_cache()
    from rich.console import Console
    from rich.table import Table

    t = Table("model", "params (M)", "batch", "images/s", "s/step", "loader wait", "peak GiB", "vs DINOv3 ViT-L/H100",
              title="pretraining step: 2 global + 8 local crops, DINO + iBOT + KoLeo")
    for r in rows:
        t.add_row(r["model"], f"{r['params_m']:.0f}", str(r["batch"]), f"{r['images_per_s']:.1f}", f"{r['step_s']:.3f}",
                  f"{r['loader_wait_frac']:.0%}", f"{r['peak_gb']:.1f}", f"{r['images_per_s'] / DINOV3_VITL_PER_GPU:.2f}x")
    Console().print(t)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
