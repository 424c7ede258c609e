"""`ortho embed` throughput per CPU core: images per second through evaluation/catalog_embed.py's batch step
(preprocess from stored pixels, forward, CLS token), one torch thread, random-init backbones (the weights do not
change the cost). Rates are per CPU-second of this process (process time), which is what an idle core gives; the
wall-clock rate on the (shared) machine is printed beside it.

    python bench/embed_throughput.py --images 256 --models vit_small_patch16_dinov3,vit_tiny_patch16_dinov3

Baseline in the same run: the preprocessing alone (robust range, resize, normalise) on the same images; the ratio
says how much of the time is the model. Images: 224 x 224 8-bit, as the real knees are stored.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from catalog.embeddings import ModelInfo  # noqa: E402
from evaluation.catalog_embed import embed_batch  # noqa: E402
from evaluation.embed import preprocess  # noqa: E402
from training.backbone import build_backbone  # noqa: E402


class ArrayStore:
    def __init__(self, images: dict[str, np.ndarray]):
        self.images = images

    def get(self, image_id: str) -> np.ndarray:
        return self.images[image_id]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--models", default="vit_small_patch16_dinov3,vit_tiny_patch16_dinov3")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    store = ArrayStore({f"{i:032x}": rng.integers(0, 256, (224, 224), dtype=np.uint8) for i in range(args.images)})
    ids = list(store.images)
    t0, c0 = time.perf_counter(), time.process_time()
    for i in ids:
        preprocess(store.get(i), 224, 0.45, 0.22)
    base = args.images / (time.process_time() - c0)
    print(f"preprocess only: {base:.0f} images per CPU-second ({args.images / (time.perf_counter() - t0):.0f} "
          "per wall second)")
    for name in args.models.split(","):
        model, spec, _ = build_backbone(name, img_size=224)
        info = ModelInfo(name, "0" * 64, "", name, 224, spec.embed_dim)
        model.eval()
        embed_batch(model, store, ids[:4], info, spec.mean[0], spec.std[0])  # warm-up
        t0, c0 = time.perf_counter(), time.process_time()
        for s in range(0, len(ids), args.batch):
            embed_batch(model, store, ids[s:s + args.batch], info, spec.mean[0], spec.std[0])
        rate = args.images / (time.process_time() - c0)  # CPU seconds: what one idle core would give
        wall = args.images / (time.perf_counter() - t0)
        print(f"{name} (dim {spec.embed_dim}) at 224 px, {args.threads} thread(s): {rate:.1f} images per CPU-second "
              f"({wall:.1f} per wall second on this machine); preprocess-only / embed ratio {base / rate:.1f}")


if __name__ == "__main__":
    main()
