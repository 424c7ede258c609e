"""Loader cost per core, by source size, bit depth and crop path, and the cores one GPU needs.

    OMP_NUM_THREADS=1 python bench/loader.py                 # every size and depth, a few minutes on one core
    python bench/loader.py --sizes 1024 --bits 16             # one row
    python bench/loader.py --gpu-json gpu.json                # GPU step rates from bench/gpu_pretrain.py --out

Sources: the two real computed radiographs of pydicom-data (RG1: 1955 x 1841, 15 bits; RG3: 1760 x 1760, 10 bits),
in 8 variants each (flips, transposes), scaled so the longer side is the source size with the shard builder's
filter (shards/resample.py), kept at their depth for 16 bits and shifted to 8 bits for 8; written as a shard set
(store-layout PNGs) in a temporary folder and read through the real stream (training.data.build_stream, the vits16
crops: 2 x 224 + 8 x 96 with iBOT masks), in this one process with one torch thread: images per CPU second of the
process (user + system time: what one core does, whatever else runs on the machine).

- decode: the PNG payloads in memory, Pillow (catalog.pixels.decode_png) against shards.decode.decode_payload;
- loader crops: crops.device=loader, a worker's whole job: read, decode, 10 crops, collate, masks;
- gpu worker: crops.device=gpu, a worker's whole job: read, decode, robust window, draws, pad into the batch, masks;
- device crops (CPU): training.device_crops.DeviceCrops cutting those batches' crops on this CPU, for reference (on
  a GPU it is a batched matmul per crop size; bench/gpu_pretrain.py measures it inside the step).

Cores per GPU = the GPU's images/s divided by a worker's images/s per core. The GPU rates: measured ones from
--gpu-json where given; else ViT-L at the project's goal (300 images/s per H200) and at DINOv3's published recipe
(2048 images per step on 32 H100s at 0.57 s/step: ~112 images/s per GPU), and ViT-S/B at ViT-L's 300 scaled by
the ratio of training FLOPs per image (counted by bench/gpu_pretrain.step_flops; an estimate at equal MFU).
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from catalog.files import file_sha256  # noqa: E402
from catalog.pixels import decode_png, encode_png  # noqa: E402
from shards.decode import decode_payload  # noqa: E402
from shards.manifest import Manifest, ShardEntry  # noqa: E402
from shards.resample import fit_max_side  # noqa: E402
from training.config import load_config  # noqa: E402
from training.data import build_stream  # noqa: E402
from training.device_crops import DeviceCrops  # noqa: E402

DINOV3_VITL_PER_GPU = 2048 / 32 / 0.57  # images/s per H100 in DINOv3's ViT-L recipe
GOAL_VITL_PER_H200 = 300.0  # the project's goal
GOAL_CORES = 4  # at most this many loader cores per H200 for ViT-L at the goal rate, from 1024 px shards
MODELS = {"ViT-S": "vit_small_patch16_dinov3", "ViT-B": "vit_base_patch16_dinov3", "ViT-L": "vit_large_patch16_dinov3"}


def real_radiographs() -> list[np.ndarray]:
    """pydicom-data's two computed radiographs (uint16, as stored), or none when the package is absent."""
    try:
        import data_store  # pydicom-data
        import pydicom
    except ImportError:
        return []
    folder = Path(data_store.__file__).parent / "data"
    out = []
    for name in ("RG1_UNCR.dcm", "RG3_UNCR.dcm"):
        if (folder / name).is_file():
            out.append(pydicom.dcmread(folder / name).pixel_array.astype(np.uint16))
    return out


def synthetic_radiograph(size: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    blob = np.sin(xx / rng.uniform(8, 64) * 512 / size) * np.cos(yy / rng.uniform(8, 64) * 512 / size)
    return ((blob + 1) * 1600 + rng.normal(0, 60, (size, size))).clip(0, 4095).astype(np.uint16)


def radiographs(size: int, bits: int, variants: int = 16, seed: int = 0) -> list[np.ndarray]:
    """`variants` distinct images whose longer side is `size`, uint16 (as stored) or uint8 (the top 8 bits)."""
    sources = real_radiographs() or [synthetic_radiograph(2048, np.random.default_rng(seed + i)) for i in range(2)]
    out = []
    for i in range(variants):
        img = sources[i % len(sources)]
        img = img[::-1] if i // len(sources) % 2 else img
        img = img.T if i // (2 * len(sources)) % 2 else img
        img = img[:, ::-1] if i // (4 * len(sources)) % 2 else img
        img = _to_side(np.ascontiguousarray(img), size)
        if bits == 8:
            img = (img >> max(0, int(img.max()).bit_length() - 8)).astype(np.uint8)
        out.append(img)
    return out


def _to_side(img: np.ndarray, size: int) -> np.ndarray:
    if max(img.shape) >= size:
        return fit_max_side(img, size)
    factor = size / max(img.shape)  # an enlargement (2048 px from the ~1900 px sources): bilinear, as a scanner
    shape = (round(img.shape[0] * factor), round(img.shape[1] * factor))
    x = torch.nn.functional.interpolate(torch.from_numpy(img.astype(np.float32))[None, None], size=shape,
                                        mode="bilinear", align_corners=False)[0, 0]
    return x.round().clamp(0, 65535).numpy().astype(np.uint16)


def write_shards(folder: Path, payloads: list[bytes], samples: int, per_shard: int = 256) -> Path:
    """A shard set of `samples` samples cycling through the PNG `payloads`; returns the manifest's path."""
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for s in range(0, samples, per_shard):
        path = folder / f"shard-{s // per_shard:06d}.tar"
        with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
            for i in range(s, min(s + per_shard, samples)):
                for ext, data in (("png", payloads[i % len(payloads)]), ("json", json.dumps({"i": i}).encode())):
                    info = tarfile.TarInfo(f"{i:012x}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        entries.append(ShardEntry(path.name, min(per_shard, samples - s), path.stat().st_size, file_sha256(path)))
    manifest = Manifest(name="bench", created="", query="bench", include_excluded=False, seed=0, selection_sha256="",
                        catalog_snapshot={}, samples=samples, bytes=sum(e.bytes for e in entries), shards=entries)
    manifest.write(folder / "manifest.json")
    return folder / "manifest.json"


def per_second(fn, count: int, repeat: int) -> float:
    """count / CPU seconds of the best of `repeat` calls of fn(): this process's CPU time (user + system, page
    faults included), not the wall clock, so that other work on a shared machine does not count."""
    best = float("inf")
    for _ in range(repeat):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return count / best


def measure(size: int, bits: int, images: int, batch: int, repeat: int, tmp: Path) -> dict:
    arrays = radiographs(size, bits)
    payloads = [encode_png(a) for a in arrays]
    manifest = write_shards(tmp / f"{size}-{bits}", payloads, images)
    row = {"size": size, "bits": bits, "shape": list(arrays[0].shape), "png_mb": float(np.mean([len(p) for p in payloads]) / 1e6),
           "decode_pillow": per_second(lambda: [decode_png(p) for p in payloads], len(payloads), repeat),
           "decode_fast": per_second(lambda: [decode_payload(p) for p in payloads], len(payloads), repeat)}
    batches = {}
    for mode in ("loader", "gpu"):
        cfg = load_config("vits16", [f"crops.device={mode}", f"optim.batch_size={batch}", "train.num_workers=0",
                                     "train.shuffle_buffer=1"])
        stream = build_stream(cfg, str(manifest), 0.5, 0.25, 16)
        n = len(stream) * batch
        row[f"{mode}_worker"] = per_second(lambda m=mode, s=stream: batches.__setitem__(m, list(s)), n, repeat)
    crops = DeviceCrops(cfg["crops"], 0.5, 0.25)
    row["device_crops_cpu"] = per_second(lambda: [crops(b) for b in batches["gpu"]], len(batches["gpu"]) * batch, 1)
    return row


def gpu_rates(gpu_json: str | None) -> dict[str, tuple[float, str]]:
    """images/s one GPU consumes per model, and where the figure comes from."""
    if gpu_json:
        rows = json.loads(Path(gpu_json).read_text())
        rows = rows["throughput"] if isinstance(rows, dict) else rows
        measured = {}
        for r in rows:  # the gpu crop path's rate, the loader-bound one removed: what the step consumes
            short = next((k for k, v in MODELS.items() if v == r["model"]), r["model"])
            measured[short] = (max(measured.get(short, (0.0, ""))[0], r["gpu_images_per_s"]), f"measured, {r['device']}")
        return measured
    from bench.gpu_pretrain import step_flops

    flops = {k: step_flops(load_config("vits16", [f"model.name={v}"])) for k, v in MODELS.items()}
    rates = {f"{k} (from ViT-L at 300, FLOPs x{flops['ViT-L'] / flops[k]:.1f})":
             (GOAL_VITL_PER_H200 * flops["ViT-L"] / flops[k], "estimate") for k in ("ViT-S", "ViT-B")}
    rates["ViT-L (goal, H200)"] = (GOAL_VITL_PER_H200, "project goal")
    rates["ViT-L (DINOv3, H100)"] = (DINOV3_VITL_PER_GPU, "DINOv3 published")
    return rates


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="224,512,1024,2048")
    ap.add_argument("--bits", default="8,16")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--pixels", type=float, default=64e6, help="source pixels read per measurement (sets the count)")
    ap.add_argument("--repeat", type=int, default=2, help="best of this many passes (a shared machine drifts)")
    ap.add_argument("--gpu-json", help="bench/gpu_pretrain.py --out file: measured step rates")
    ap.add_argument("--out", help="write the rows as JSON here")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in map(int, args.sizes.split(",")):
            for bits in map(int, args.bits.split(",")):
                images = max(args.batch, int(args.pixels / size**2) // args.batch * args.batch)
                rows.append(measure(size, bits, images, args.batch, args.repeat, Path(tmp)))
                print(json.dumps(rows[-1]), flush=True)
    rates = gpu_rates(args.gpu_json)
    print_tables(rows, rates)
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "rates": rates}, indent=2))
    return rows


def print_tables(rows: list[dict], rates: dict[str, tuple[float, str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table("source", "PNG MB", "decode Pillow", "decode fast", "fast/Pillow", "loader crops", "gpu worker",
              "gpu/loader", "device crops (CPU)", title="images/s per core (one process, one thread)")
    for r in rows:
        t.add_row(f"{r['size']} px {r['bits']}-bit", f"{r['png_mb']:.2f}", f"{r['decode_pillow']:.0f}",
                  f"{r['decode_fast']:.0f}", f"{r['decode_fast'] / r['decode_pillow']:.2f}", f"{r['loader_worker']:.0f}",
                  f"{r['gpu_worker']:.0f}", f"{r['gpu_worker'] / r['loader_worker']:.2f}", f"{r['device_crops_cpu']:.1f}")
    Console().print(t)
    c = Table("source", *[f"{name}\n{rate:.0f} img/s\nloader / gpu" for name, (rate, _) in rates.items()],
              title="loader cores one GPU needs (crops in the workers / crops on the GPU)")
    for r in rows:
        c.add_row(f"{r['size']} px {r['bits']}-bit",
                  *[f"{rate / r['loader_worker']:.1f} / {rate / r['gpu_worker']:.1f}" for rate, _ in rates.values()])
    Console().print(c)
    goal = next((r for r in rows if r["size"] == 1024 and r["bits"] == 16), None)
    if goal:
        cores = GOAL_VITL_PER_H200 / goal["gpu_worker"]
        print(f"ViT-L at {GOAL_VITL_PER_H200:.0f} images/s per H200 from 1024 px 16-bit shards: {cores:.1f} cores with "
              f"crops on the GPU, {GOAL_VITL_PER_H200 / goal['loader_worker']:.1f} with crops in the workers "
              f"(goal: at most {GOAL_CORES}) -> {'met' if cores <= GOAL_CORES else 'missed'}")


if __name__ == "__main__":
    main()
