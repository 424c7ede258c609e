"""Near-duplicate detection on real contrast-enhanced copies: ours against imagededup's PHash.

    pip install imagededup        # the peer (not a project dependency)
    python bench/dedup.py

Images: ../shared/data/knee-xray-kl/train (2,503 knees) and knee-xray-kl-clahe (60 CLAHE copies
of some of them, same relative path). True pairs: each copy with its original (60). Every pair a
method reports is counted: precision = true pairs reported / pairs reported, recall = true pairs
reported / 60. Ours: curation/dedup/signatures.py embeddings, the same edge rules as `ortho curate`
(threshold 0.66, left/right never paired). PHash: imagededup's, at its default Hamming threshold
(10) and a sweep.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curation.dedup.config import DedupConfig  # noqa: E402
from tests.dedup_reference import find_edges  # noqa: E402
from curation.dedup.signatures import signature  # noqa: E402

DATA = ROOT.parent / "shared" / "data"


def load_corpus() -> tuple[list[Path], set[frozenset]]:
    originals = sorted((DATA / "knee-xray-kl" / "train").rglob("*.png"))
    copies = sorted((DATA / "knee-xray-kl-clahe" / "train").rglob("*.png"))
    paths = originals + copies
    index = {p: i for i, p in enumerate(paths)}
    truth = set()
    for c in copies:
        o = DATA / "knee-xray-kl" / "train" / c.relative_to(DATA / "knee-xray-kl-clahe" / "train")
        truth.add(frozenset((index[o], index[c])))
    return paths, truth


def score(pairs: set[frozenset], truth: set[frozenset]) -> tuple[float, float, int]:
    hit = len(pairs & truth)
    return (hit / len(pairs) if pairs else 1.0), hit / len(truth), len(pairs) - hit


def ours(paths: list[Path]) -> tuple[set[frozenset], float]:
    t = time.perf_counter()
    sigs = [signature(np.asarray(Image.open(p))) for p in paths]
    emb = np.stack([s[0] for s in sigs])
    flip = np.stack([s[1] for s in sigs])
    laterality = [p.stem[-1] if p.stem[-1] in "LR" else None for p in paths]
    edges = find_edges(emb, flip, laterality, [None] * len(paths), DedupConfig())
    return {frozenset((e.a, e.b)) for e in edges}, time.perf_counter() - t


def phash(paths: list[Path], thresholds: list[int]) -> tuple[dict[int, set[frozenset]], float]:
    from imagededup.methods import PHash

    t = time.perf_counter()
    hasher = PHash(verbose=False)
    encodings = {str(i): hasher.encode_image(image_file=str(p)) for i, p in enumerate(paths)}
    out = {}
    for th in thresholds:
        dups = hasher.find_duplicates(encoding_map=encodings, max_distance_threshold=th, scores=False)
        out[th] = {frozenset((int(a), int(b))) for a, bs in dups.items() for b in bs}
    return out, time.perf_counter() - t


def main() -> None:
    if not (DATA / "knee-xray-kl-clahe").is_dir():
        raise SystemExit(f"needs {DATA}/knee-xray-kl and knee-xray-kl-clahe")
    paths, truth = load_corpus()
    print(f"{len(paths)} images, {len(truth)} true pairs (CLAHE copy, original)\n")
    print(f"{'method':<32} {'precision':>9} {'recall':>7} {'false pairs':>11} {'seconds':>8}")
    pairs, secs = ours(paths)
    p, r, fp = score(pairs, truth)
    print(f"{'ours (whitened embedding)':<32} {p:>9.3f} {r:>7.3f} {fp:>11,} {secs:>8.1f}")
    try:
        sweep, secs = phash(paths, [2, 4, 6, 10, 14, 20])
    except ImportError:
        print("imagededup is not installed: pip install imagededup")
        return
    for th, pairs in sweep.items():
        p, r, fp = score(pairs, truth)
        label = f"imagededup PHash <= {th}" + (" (default)" if th == 10 else "")
        print(f"{label:<32} {p:>9.3f} {r:>7.3f} {fp:>11,} {'' if th != 2 else f'{secs:.1f}':>8}")
    best = max(sweep.items(), key=lambda kv: 2 * len(kv[1] & truth) / (len(kv[1]) + len(truth)))
    p, r, _ = score(best[1], truth)
    print(f"\nPHash seconds: encoding once plus every threshold. Its best F1 is at distance <= {best[0]}: "
          f"precision {p:.3f}, recall {r:.3f}")


if __name__ == "__main__":
    main()
