"""Pretraining throughput, MFU and peak memory for ViT-S/B/L with both crop paths, and a short real run.

    python bench/gpu_pretrain.py --out gpu.json       # CUDA: ViT-S/B/L x crops loader|gpu, bf16, then a real run
    python bench/gpu_pretrain.py --knee-manifest workspace/shards/knee-train/manifest.json --out gpu.json
    python bench/gpu_pretrain.py --decode workers,device --real-steps 0 --out gpu-decode.json   # HTJ2K: both decodes

Throughput: shards of real computed radiographs (bench/loader.py's sources) at --size px (1024: the default
shard resolution) and 16 bits are written in a temporary folder and streamed through the real loader (--workers
processes) into the real training step (student + EMA teacher, DINO + iBOT + KoLeo, 65,536 prototypes, AdamW,
bf16 autocast on CUDA), for each model and each crop path: `loader` (crops cut in the workers) and `gpu` (the
workers decode, training/device_crops.py cuts the crops inside the step). For each model the first batch of
--batch that fits is used (an out-of-memory steps down). Reported: images/s end to end; the share of the time
spent waiting for the loader; images/s with that wait taken out (what the GPU alone sustains, crops included on
the gpu path); MFU = training FLOPs per image (counted once on the meta device: student forward + backward,
teacher forward) x images/s / the GPU's bf16 dense peak; peak memory. Reference: DINOv3's ViT-L/16 recipe runs
about 112 images/s per H100 (2048 per step on 32 GPUs at 0.57 s/step); the project's goal is 300 per H200.

Decode paths (--decode, issue 29): `workers` decodes in the loader workers (CPU); `device` hands the compressed
HTJ2K payloads to the training device, where nvImageCodec (nvJPEG2000) decodes them when both are installed (`pip
install nvidia-nvimgcodec-cu12 nvidia-nvjpeg2k-cu12`, about 41 MB of wheels: download them beforehand for a machine
without network access) and the device is CUDA (the row's `decoder` says which: without it the payloads are decoded on the CPU of the training
process, a dry run only). `device` applies to the gpu crop path and needs HTJ2K shards, so any --decode with it
writes the throughput shards as HTJ2K (--codec otherwise: png or htj2k).

The real run: the pretraining job itself (training.trainer.run_pretraining: checkpoints, metrics.jsonl) for
--real-steps steps of ViT-S/16 with crops on the GPU, on a knee shard set: --knee-manifest, else one built from
../shared/data/knee-xray-kl when it is there, else phantom knee radiographs (flows/phantom) written as shards;
the loss of the first and last logged steps is printed. The whole default run fits in about 10 minutes of an H200.

A CPU smoke run of every path (tests/training/test_gpu_bench.py):
    python bench/gpu_pretrain.py --models vit_pico_patch8_dinov3 --batch 4 --steps 2 --warmup 1 --size 64 --workers 0 \\
        --real-steps 3 --tiny
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.loader import DINOV3_VITL_PER_GPU, radiographs, write_shards  # noqa: E402
from catalog.pixels import encode_png  # noqa: E402
from shards.codecs import CODECS  # noqa: E402
from training.config import PretrainConfig, load_config  # noqa: E402
from training.data import build_stream, make_loader  # noqa: E402
from training.distributed import setup_distributed  # noqa: E402
from training.schedules import build_schedules  # noqa: E402
from training.step import train_step  # noqa: E402
from training.trainer import build_learner  # noqa: E402

PEAK_BF16_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "L40S": 362.0, "A10": 125.0}  # dense, per GPU
MODELS = "vit_small_patch16_dinov3,vit_base_patch16_dinov3,vit_large_patch16_dinov3"
# A model small enough for a CPU smoke run (tests): every path of the script in seconds.
TINY = ["head.prototypes=128", "head.ibot_prototypes=128", "head.hidden_dim=64", "head.bottleneck_dim=32",
        "crops.global_size=32", "crops.local_size=16", "crops.local_crops=2", "train.tensorboard=false"]


def step_flops(cfg: PretrainConfig) -> float:
    """Training FLOPs per image of one step (student forward + backward on every crop, teacher forward on the
    global ones, heads on the CLS tokens and on the expected number of masked patches), counted on the meta
    device: no memory, no weights."""
    from torch.utils.flop_counter import FlopCounterMode

    from training.backbone import forward_tokens
    from training.model import build_ssl_models

    c, loss = cfg.crops, cfg.loss
    with torch.device("meta"):
        random_init = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, init="random"))
        student, teacher, _ = build_ssl_models(random_init, c.global_size)
        glob = torch.empty(2, 1, c.global_size, c.global_size)
        local = torch.empty(c.local_crops, 1, c.local_size, c.local_size)
    grid = c.global_size // student.spec.patch_size
    masked = max(1, round(2 * loss.mask_probability * float(np.mean(loss.mask_ratio)) * grid * grid))
    with FlopCounterMode(display=False) as counter:
        cls, patches = forward_tokens(student.backbone, glob)
        heads = [cls] + ([forward_tokens(student.backbone, local)[0]] if c.local_crops else [])
        out = student.dino_head(torch.cat(heads)).sum() + student.ibot_head(patches.flatten(0, 1)[:masked]).sum()
        out.backward()
        with torch.no_grad():
            t_cls, t_patches = forward_tokens(teacher.backbone, glob)
            teacher.dino_head(t_cls)
            teacher.ibot_head(t_patches.flatten(0, 1)[:masked])
    return float(counter.get_total_flops())


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_gb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def measure(model: str, mode: str, batch: int, args, manifest: Path, flops: float, decode: str = "workers") -> dict:
    cfg = load_config("vits16", [f"model.name={model}", f"crops.device={mode}", f"crops.decode={decode}",
                                 f"optim.batch_size={batch}",
                                 f"train.steps={args.warmup + args.steps}", f"train.num_workers={args.workers}",
                                 "train.verify_shards=false", *(TINY if args.tiny else []), *args.overrides])
    ctx = setup_distributed(cfg.train.device)
    learner, _ = build_learner(cfg, ctx)
    spec = learner.student_module.spec
    stream = build_stream(cfg, str(manifest), spec.mean[0], spec.std[0], spec.patch_size, device=ctx.device)
    schedules = build_schedules(cfg)
    if ctx.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(ctx.device)
    step, t0, wait, epoch = 0, None, 0.0, 0
    while step < args.warmup + args.steps:
        stream.set_epoch(epoch)
        epoch += 1
        it = iter(make_loader(stream, args.workers, pin_memory=ctx.device.type == "cuda"))
        while step < args.warmup + args.steps:
            w0 = time.perf_counter()
            batch_data = next(it, None)
            if batch_data is None:
                break
            if t0 is not None:
                wait += time.perf_counter() - w0
            train_step(learner, batch_data, step, schedules, log=False)
            step += 1
            if step == args.warmup:
                _sync(ctx.device)
                t0 = time.perf_counter()
    _sync(ctx.device)
    elapsed = time.perf_counter() - t0
    images = args.steps * batch
    peak = peak_tflops(ctx.device, args.peak_tflops)
    rate, gpu_rate = images / elapsed, images / max(elapsed - wait, 1e-9)
    decoder = "workers" if stream.decode else (learner.crops.decoder.backend if learner.crops.decoder else "none")
    return {"model": model, "crops": mode, "decode": decode, "decoder": decoder, "codec": stream.manifest.codec["name"],
            "params_m": sum(p.numel() for p in learner.student_module.backbone.parameters()) / 1e6,
            "batch": batch, "images_per_s": rate, "step_s": elapsed / args.steps, "loader_wait_frac": wait / elapsed,
            "gpu_images_per_s": gpu_rate, "gflops_per_image": flops / 1e9,
            "mfu": flops * rate / (peak * 1e12) if peak else None,
            "gpu_mfu": flops * gpu_rate / (peak * 1e12) if peak else None, "peak_gb": _peak_gb(ctx.device),
            "device": torch.cuda.get_device_name(ctx.device) if ctx.device.type == "cuda" else "cpu",
            "precision": "bf16" if learner.autocast_dtype == torch.bfloat16 else "fp32"}


def measure_model(model: str, args, manifest: Path) -> list[dict]:
    """Both crop paths at the first batch of --batch that fits."""
    cfg = load_config("vits16", [f"model.name={model}", *(TINY if args.tiny else []), *args.overrides])
    flops = step_flops(cfg)
    rows = []
    for batch in map(int, args.batch.split(",")):
        try:
            for mode in args.crops.split(","):
                for decode in args.decode.split(",") if mode == "gpu" else ["workers"]:
                    rows.append(measure(model, mode, batch, args, manifest, flops, decode))
                    print(json.dumps(rows[-1]), flush=True)
            return rows
        except torch.OutOfMemoryError:
            print(f"{model}: batch {batch} does not fit, trying smaller", flush=True)
            rows = []
        finally:
            gc.collect()  # the failed attempt's model and optimizer, before the next one allocates
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    return rows


def knee_manifest(args, tmp: Path) -> tuple[Path, str]:
    """A knee shard set for the real run, and what it holds."""
    if args.knee_manifest:
        return Path(args.knee_manifest), f"the knee shard set {Path(args.knee_manifest).parent.name}"
    kl = ROOT.parent / "shared" / "data" / "knee-xray-kl"
    if kl.is_dir():
        from catalog.workspace import Workspace
        from ingest.run import ingest_source
        from ingest.sources import Source, add_source
        from shards.spec import ShardSetSpec
        from shards.writer import build_shard_set

        ws = Workspace.open(tmp / "knee-ws")
        add_source(ws, Source("kl", str(kl / "train"), "public", modality="DX", body_part="knee"))
        ingest_source(ws, "kl", batch_size=512)
        path, m, _ = build_shard_set(ws, ShardSetSpec("knee", "SELECT image_id FROM images", samples_per_shard=256))
        return path, f"{m.samples} real knee radiographs (knee-xray-kl train, 224 px 8-bit)"
    from flows.phantom.radiographs import draw_radiograph

    rng = np.random.default_rng(0)
    knees = [encode_png(draw_radiograph(int(rng.integers(0, 5)), "LR"[i % 2], rng, size=args.phantom_size,
                                        pose=np.random.default_rng(i))) for i in range(args.phantom_knees)]
    return write_shards(tmp / "phantom-knees", knees, len(knees)), \
        f"{len(knees)} phantom knee radiographs ({args.phantom_size} px, 12 bits; no real knees on this machine)"


def real_run(args, tmp: Path) -> dict:
    from training.metrics import read_metrics
    from training.trainer import run_pretraining

    from shards.manifest import Manifest

    manifest, what = knee_manifest(args, tmp)
    steps = args.real_steps
    workers = max(0, min(args.workers, Manifest.read(manifest).samples // (2 * args.real_batch)))  # >= 2 batches each
    overrides = ["crops.device=gpu", f"train.steps={steps}", f"train.checkpoint_every={steps}",
                 f"train.log_every={max(1, steps // 30)}", f"train.num_workers={workers}",
                 f"optim.batch_size={args.real_batch}", f"optim.warmup_steps={max(1, steps // 10)}",
                 f"loss.teacher_temp_warmup_steps={max(1, steps // 3)}", "train.tensorboard=false",
                 *(TINY + ["model.name=vit_pico_patch8_dinov3"] if args.tiny else []), *args.overrides]
    t0 = time.perf_counter()
    run_pretraining(manifest, "vits16", overrides, tmp / "real-run", show_progress=False)
    rows = read_metrics(tmp / "real-run")
    keys = ("loss", "dino", "ibot", "koleo")
    return {"data": what, "steps": steps, "batch": args.real_batch, "seconds": time.perf_counter() - t0,
            "first": {k: rows[0][k] for k in ("step", *keys)}, "last": {k: rows[-1][k] for k in ("step", *keys)},
            "images_per_s": float(np.median([r["images_per_s"] for r in rows[1:]] or [rows[0]["images_per_s"]])),
            "curve": [(r["step"], round(r["loss"], 4)) for r in rows]}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=MODELS)
    ap.add_argument("--crops", default="loader,gpu", help="crop paths to measure")
    ap.add_argument("--decode", default="workers", help="decode paths of the gpu crop path: workers, device or both")
    ap.add_argument("--codec", default="png", choices=sorted(CODECS), help="payload codec of the throughput shards")
    ap.add_argument("--batch", default="128,64,32", help="batch sizes to try, largest first")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--workers", type=int, default=max(1, min(15, torch.multiprocessing.cpu_count() - 1)))
    ap.add_argument("--size", type=int, default=1024, help="source side of the throughput shards")
    ap.add_argument("--images", type=int, help="samples in the throughput shards [default: enough for every reader]")
    ap.add_argument("--peak-tflops", type=float, help="the GPU's bf16 dense peak, when its name is not known")
    ap.add_argument("--real-steps", type=int, default=300, help="steps of the real run (0: none)")
    ap.add_argument("--real-batch", type=int, default=64)
    ap.add_argument("--knee-manifest", help="a knee shard set for the real run")
    ap.add_argument("--phantom-knees", type=int, default=640)
    ap.add_argument("--phantom-size", type=int, default=256)
    ap.add_argument("--tiny", action="store_true", help="tiny heads and crops (a CPU smoke run)")
    ap.add_argument("--out", help="write the results as JSON here")
    ap.add_argument("overrides", nargs="*", help="config overrides (e.g. train.compile=true)")
    args = ap.parse_args(argv)
    results: dict = {"throughput": [], "real_run": None}
    with tempfile.TemporaryDirectory() as tmp:
        codec = CODECS["htj2k" if "device" in args.decode.split(",") else args.codec]
        payloads = [codec.encode(a) for a in radiographs(args.size, 16)]
        readers = max(args.workers, 1)
        images = args.images or readers * max(map(int, args.batch.split(","))) * 2
        manifest = write_shards(Path(tmp) / "throughput", payloads, images, ext=codec.ext)
        for model in args.models.split(","):
            results["throughput"] += measure_model(model, args, manifest)
            _save(results, args.out)  # what is measured survives a later failure
        if args.real_steps:
            results["real_run"] = real_run(args, Path(tmp))
            _save(results, args.out)
    print_results(results)
    return results


def _save(results: dict, out: str | None) -> None:
    if out:
        Path(out).write_text(json.dumps(results, indent=2))


def print_results(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    def pct(v):
        return "n/a" if v is None else f"{v:.0%}"

    t = Table("model", "crops", "decode", "batch", "images/s", "loader wait", "images/s (GPU)", "MFU (GPU)", "peak GiB",
              "vs DINOv3 ViT-L/H100", title="pretraining step: 2 global + 8 local crops, DINO + iBOT + KoLeo")
    for r in results["throughput"]:
        t.add_row(r["model"], r["crops"], f"{r['decode']} ({r['decoder']}, {r['codec']})", str(r["batch"]), f"{r['images_per_s']:.1f}", pct(r["loader_wait_frac"]),
                  f"{r['gpu_images_per_s']:.1f}", f"{pct(r['mfu'])} ({pct(r['gpu_mfu'])})",
                  "n/a" if r["peak_gb"] is None else f"{r['peak_gb']:.1f}",
                  f"{r['images_per_s'] / DINOV3_VITL_PER_GPU:.2f}x")
    Console().print(t)
    run = results["real_run"]
    if run:
        f, last = run["first"], run["last"]
        print(f"real run on {run['data']}: {run['steps']} steps of batch {run['batch']} in {run['seconds']:.0f} s "
              f"({run['images_per_s']:.0f} images/s); loss {f['loss']:.3f} at step {f['step']} -> {last['loss']:.3f} "
              f"at step {last['step']} (dino {f['dino']:.3f} -> {last['dino']:.3f}, ibot {f['ibot']:.3f} -> "
              f"{last['ibot']:.3f}, koleo {f['koleo']:.3f} -> {last['koleo']:.3f})")


if __name__ == "__main__":
    main()
