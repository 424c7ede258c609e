"""Near-duplicate search time against catalog size, on synthetic signatures made here.

    python bench/curate.py                       # 100k and 1.2M
    python bench/curate.py --sizes 100000,300000

Synthetic signatures: unit vectors in the embedding space (256-d float16), 1% of them planted
near-duplicates (a base vector plus noise, cosine ~0.8). Measures curation's search
(curation/near_dup.NeighbourSearch: one IVF index, range-searched with plain and mirrored
queries, as `ortho curate` does), prints seconds, the growth exponent between sizes and the recall of
planted pairs. Goal: 1.2M in under 5 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curation.near_dup import DedupConfig, NeighbourSearch  # noqa: E402
from curation.signatures import DIM  # noqa: E402


def synthetic(n: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    emb = rng.standard_normal((n, DIM), dtype=np.float32)
    planted = n // 100
    base = emb[:planted].copy()
    emb[n - planted :] = base + 0.5 * rng.standard_normal((planted, DIM), dtype=np.float32) / 1.0
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return emb.astype(np.float16), planted


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000,1200000")
    args = ap.parse_args()
    cfg = DedupConfig()
    print(f"{'images':>9} {'seconds':>8} {'pairs found':>12} {'recall':>7} {'growth':>7}")
    prev = None
    for n in [int(x) for x in args.sizes.split(",")]:
        emb, planted = synthetic(n, np.random.default_rng(n))
        flip = emb[:, ::-1].copy()  # a stand-in for mirrored embeddings: same cost
        t = time.perf_counter()
        index = NeighbourSearch(emb, cfg)
        pairs = index.range(emb, cfg.threshold)
        index.range(flip, cfg.threshold)
        secs = time.perf_counter() - t
        found = {(i, j) for i, j, _ in pairs}
        recall = sum((i, n - planted + i) in found for i in range(planted)) / planted
        growth = f"{math.log(secs / prev[1]) / math.log(n / prev[0]):.2f}" if prev else ""
        print(f"{n:>9,} {secs:>8.1f} {len(pairs):>12,} {recall:>7.3f} {growth:>7}", flush=True)
        prev = (n, secs)


if __name__ == "__main__":
    main()
