"""Hierarchical k-means (curation/clusters.py) on synthetic embeddings: wall time per level and peak memory.

    python bench/hkmeans.py --n 1200000 --dims 384 --ks 1000,100,10 --threads 2

The vectors are a mixture of 5,000 Gaussian blobs of unequal sizes (a long tail, like an archive), unit length.
Baseline in the same run: one exact assignment pass of every vector to the level-1 centroids (the least any
clustering of all the vectors costs); the ratio says how many such passes the whole hierarchy costs. The goal
(issue 30): 1.2M x 384 on 2 cores in under 10 minutes.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import faiss  # noqa: E402

from curation.clusters import ClusterConfig, _assign, hierarchical_kmeans  # noqa: E402

GOAL_S = 600.0


def synthetic(n: int, dims: int, blobs: int, seed: int) -> np.ndarray:
    """Unit vectors around `blobs` centres with Zipf-like sizes; built in chunks to keep one [n, dims] array."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((blobs, dims)).astype(np.float32)
    weights = 1.0 / np.arange(1, blobs + 1) ** 0.8
    which = rng.choice(blobs, size=n, p=weights / weights.sum())
    x = np.empty((n, dims), np.float32)
    for s in range(0, n, 100_000):
        e = min(s + 100_000, n)
        x[s:e] = centres[which[s:e]] + 0.6 * rng.standard_normal((e - s, dims), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_200_000)
    ap.add_argument("--dims", type=int, default=384)
    ap.add_argument("--ks", default="1000,100,10")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--niter", type=int, default=20)
    args = ap.parse_args()
    faiss.omp_set_num_threads(args.threads)
    ks = tuple(int(k) for k in args.ks.split(","))
    t0 = time.perf_counter()
    x = synthetic(args.n, args.dims, 5000, 0)
    print(f"data: {args.n:,} x {args.dims} ({x.nbytes / 2**30:.2f} GiB) in {time.perf_counter() - t0:.1f} s, "
          f"peak {peak_gib():.2f} GiB", flush=True)
    t0 = time.perf_counter()
    labels, dists, cents = hierarchical_kmeans(x, ks, ClusterConfig(niter=args.niter))
    total = time.perf_counter() - t0
    sizes = [np.unique(lab, return_counts=True)[1] for lab in labels]
    for level, (k, c) in enumerate(zip(ks, sizes), 1):
        print(f"level {level}: k={k}, {len(c)} non-empty clusters, sizes {c.min()}..{c.max()}")
    t0 = time.perf_counter()
    _assign(x, cents[0])
    one_pass = time.perf_counter() - t0
    print(f"hierarchical k-means {ks}: {total:.1f} s on {args.threads} threads; one assignment pass "
          f"{one_pass:.1f} s (ratio {total / one_pass:.1f}); goal {GOAL_S:.0f} s (ratio {total / GOAL_S:.2f}); "
          f"peak memory {peak_gib():.2f} GiB")


if __name__ == "__main__":
    main()
