"""Cropped re-exports: recall and precision of the crop search on real knees, and how its cost grows.

    python bench/crop_dups.py [--crops 400] [--scale 25000,100000]

1. Real data. Every knee of ../shared/data/knee-xray-kl (3,329 radiographs, the distractors) plus
   `--crops` re-exports of randomly chosen ones: 85-97% of each side kept at a random offset, half
   resized back to the original size, then one of four treatments in turn: none, JPEG quality 70,
   CLAHE, downscaled to 60%. Runs the search `ortho curate` runs (curation/dedup/crop_match.py) with the pixel
   check's threshold off, and prints, per treatment, how many crops were verified and their aligned
   texture cosine, against the highest cosine of any pair of different knees that reached the pixel
   check; then recall and false pairs at several thresholds, and the baseline: the global signature
   (whole image against whole image), which is what finds re-exports without a crop.
2. Cost. The descriptor vote search over synthetic catalogs of `--scale` images (24 descriptors each,
   drawn around real descriptors with enough noise that none matches another, so that the time is
   that of the search, not of verifying planted pairs); prints seconds, false candidate pairs per
   image, the growth exponent and the extrapolation to 1.2 million images.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curation.dedup import crop_match as C  # noqa: E402
from curation.dedup import config  # noqa: E402
from curation.dedup import descriptor_votes  # noqa: E402
from curation.dedup import keypoints  # noqa: E402
from curation.dedup.signatures import signature  # noqa: E402

TREATMENTS = ["crop", "crop + JPEG 70", "crop + CLAHE", "crop + downscale 60%"]


def reexport(a: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    import cv2

    h, w = a.shape
    f = rng.uniform(0.85, 0.97)
    ch, cw = round(h * f), round(w * f)
    y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    c = a[y0 : y0 + ch, x0 : x0 + cw]
    if k % 2 == 0:
        c = np.asarray(Image.fromarray(c).resize((w, h), Image.BICUBIC))
    t = k % 4
    if t == 1:
        buf = io.BytesIO()
        Image.fromarray(c).save(buf, "JPEG", quality=70)
        c = np.asarray(Image.open(buf))
    elif t == 2:
        c = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(np.ascontiguousarray(c))
    elif t == 3:
        c = np.asarray(Image.fromarray(c).resize((round(c.shape[1] * 0.6), round(c.shape[0] * 0.6)), Image.LANCZOS))
    return c


def real(n_crops: int) -> None:
    files = sorted((ROOT.parent / "shared" / "data" / "knee-xray-kl").rglob("*.png"))
    if not files:
        print("1. skipped: needs ../shared/data/knee-xray-kl")
        return
    imgs = [np.asarray(Image.open(f).convert("L")) for f in files]
    rng = np.random.default_rng(0)
    pick = rng.choice(len(imgs), n_crops, replace=False)
    copies = [reexport(imgs[i], k, rng) for k, i in enumerate(pick)]
    everything = imgs + copies
    t0 = time.perf_counter()
    feats = [keypoints.features(a) for a in everything]
    t_feat = (time.perf_counter() - t0) / len(everything)
    kp = np.concatenate([k for k, _ in feats])
    desc = np.concatenate([d for _, d in feats])
    sizes = np.array([len(k) for k, _ in feats])
    truth = {(int(i), len(imgs) + k): k % 4 for k, i in enumerate(pick)}
    print(f"1. real knees: {len(imgs)} originals + {n_crops} re-exports; keypoints {t_feat * 1000:.1f} ms per image "
          f"(one core), {sizes.mean():.1f} per image")
    default = config.CropConfig().nprobe
    for nprobe in sorted({4, default, 16}, key=lambda p: p == default):  # the default last: its edges are used below
        cfg = config.CropConfig(threshold=-1.0, nprobe=nprobe, exact_below=0)
        t0 = time.perf_counter()
        edges, counts = C.crop_edges(kp, desc, sizes, lambda a, b: np.zeros(len(a), bool), lambda i: everything[i], cfg)
        elapsed = time.perf_counter() - t0
        per = counts["check_s"] / max(counts["candidates"], 1) * 1000
        print(f"   nprobe {nprobe}: {elapsed:.1f} s = vote search {counts['search_s']:.1f} s + checks {counts['check_s']:.1f} s "
              f"({per:.2f} ms per candidate, {counts['candidates'] / len(everything):.2f} candidates per image); {counts}")
    true_sim = {(e.a, e.b): e.similarity for e in edges if (e.a, e.b) in truth}
    false_sim = np.array([e.similarity for e in edges if (e.a, e.b) not in truth])
    print(f"   {'treatment':<22} {'reached the check':>18} {'cosine min / 5th pct / median':>32}")
    for t, name in enumerate(TREATMENTS):
        sims = np.array([s for p, s in true_sim.items() if truth[p] == t])
        total = sum(1 for v in truth.values() if v == t)
        q = np.quantile(sims, [0, 0.05, 0.5]) if len(sims) else [np.nan] * 3
        print(f"   {name:<22} {len(sims):>10} of {total:<5} {q[0]:>14.3f} / {q[1]:.3f} / {q[2]:.3f}")
    top = np.sort(false_sim)[-3:][::-1] if len(false_sim) else []
    print(f"   different knees that reached the check: {len(false_sim)}, highest cosines {np.round(top, 3).tolist()}")
    sims = np.array(list(true_sim.values()))
    for thr in (0.35, 0.45, 0.55):
        mark = "  <- default" if thr == config.CropConfig().threshold else ""
        print(f"   threshold {thr}: recall {(sims >= thr).sum() / n_crops:.1%}, false pairs {(false_sim >= thr).sum()}{mark}")
    emb = np.stack([signature(a)[0].astype(np.float32) for a in imgs])
    plain = np.array([float(signature(copies[k])[0].astype(np.float32) @ emb[i]) for k, i in enumerate(pick)])
    print(f"   baseline, the global signature whole against whole: median cosine {np.median(plain):.3f}, "
          f"found at its threshold 0.66: {(plain >= 0.66).mean():.1%}")


def synthetic(n_images: int, pool: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """n_images x 24 descriptors, each a real one plus noise (cosine ~0.75 to it), as uint8."""
    out = np.empty((n_images * keypoints.KEYPOINTS, keypoints.DESC), np.uint8)
    for s in range(0, len(out), 1 << 20):
        m = min(1 << 20, len(out) - s)
        d = pool[rng.integers(0, len(pool), m)].astype(np.float32) / 255
        d = np.abs(d + rng.normal(0, 0.06, d.shape).astype(np.float32))
        out[s : s + m] = np.round(255 * d / np.linalg.norm(d, axis=1, keepdims=True))
    return out


def scale(sizes: list[int]) -> None:
    files = sorted((ROOT.parent / "shared" / "data" / "knee-xray-kl" / "train").rglob("*.png"))[:400]
    rng = np.random.default_rng(1)
    if files:
        pool = np.concatenate([keypoints.features(np.asarray(Image.open(f).convert("L")))[1] for f in files])
    else:  # no real data: random RootSIFT-like vectors
        pool = np.round(255 * np.sqrt(rng.dirichlet(np.ones(keypoints.DESC) * 0.3, 10_000))).astype(np.uint8)
    print(f"2. descriptor vote search (IVF, 8-bit lists, nprobe {config.CropConfig().nprobe}), {keypoints.KEYPOINTS} descriptors per image")
    print(f"   {'images':>10} {'descriptors':>12} {'seconds':>8} {'false candidates per image':>28} {'exponent':>9}")
    prev = None
    for n in sizes:
        desc = synthetic(n, pool, rng)
        owner = np.repeat(np.arange(n), keypoints.KEYPOINTS)
        cfg = config.CropConfig(exact_below=0)
        t0 = time.perf_counter()
        q, j, _ = descriptor_votes.votes(desc, owner, cfg)
        elapsed = time.perf_counter() - t0
        pair, per = np.unique(owner[q] * n + owner[j], return_counts=True)
        cand = int((per >= cfg.min_votes).sum())
        exp = f"{np.log(elapsed / prev[1]) / np.log(n / prev[0]):.2f}" if prev else ""
        print(f"   {n:>10,} {len(desc):>12,} {elapsed:>8.1f} {cand / n:>28.4f} {exp:>9}")
        prev = (n, elapsed)
        del desc, owner, q, j
    if prev and len(sizes) > 1:
        e = float(exp)
        est = prev[1] * (1.2e6 / prev[0]) ** e
        print(f"   extrapolated to 1,200,000 images at exponent {e:.2f}: {est / 60:.0f} minutes on this machine")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--crops", type=int, default=400)
    ap.add_argument("--scale", default="25000,100000", help="catalog sizes (images) for the cost part; '' skips it")
    args = ap.parse_args()
    real(args.crops)
    if args.scale:
        scale([int(s) for s in args.scale.split(",")])


if __name__ == "__main__":
    main()
