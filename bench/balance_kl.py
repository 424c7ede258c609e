"""Balanced selection on the real knees: the KL-grade histogram of a fixed-size subset drawn at random against one
drawn evenly over embedding clusters (shards/balance.py), which never sees a label.

    ortho sources add knees ../shared/data/knee-xray-kl --kind public --labels folder:kl_grade --modality DX \\
          --body-part knee --path-pattern '(?P<split>train|val|test)/(?P<label>\\d)/(?P<patient>\\d+)(?P<laterality>[LR])\\.png'
    ortho ingest && ortho curate
    ortho embed --checkpoint CKPT [--model ARCH] && ortho cluster --k 100,20,5
    python bench/balance_kl.py --workspace workspace --size 500 --level 2 --seeds 5

Pool: the images `--pool` selects (default: the train split). Baseline in the same run: uniform random draws of the
same size and seeds. Printed per selection: images per grade (mean over seeds), the largest grade's share, the
normalised entropy of the grade distribution (1 = every grade equally often) and the ratio balanced / random.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from catalog import db  # noqa: E402
from catalog.workspace import Workspace  # noqa: E402
from shards.balance import BalanceSpec, balance  # noqa: E402

GRADES = ("0", "1", "2", "3", "4")


def histogram(grades: list[str]) -> np.ndarray:
    return np.array([sum(g == k for g in grades) for k in GRADES], float)


def entropy(h: np.ndarray) -> float:
    p = h / h.sum()
    p = p[p > 0]
    return float(-(p * np.log(p)).sum() / np.log(len(GRADES)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workspace", default="workspace")
    ap.add_argument("--pool", default="SELECT image_id FROM images WHERE split = 'train'")
    ap.add_argument("--size", type=int, default=500)
    ap.add_argument("--level", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=5)
    args = ap.parse_args()
    ws = Workspace.open(args.workspace)
    rows = db.query(ws, f"""SELECT p.image_id, l.value FROM ({args.pool}) p
                            JOIN labels l ON l.image_id = p.image_id AND l.task = 'kl_grade' ORDER BY p.image_id""")[1]
    grade = dict(rows)
    ids = sorted(grade)
    pool = histogram(list(grade.values()))
    print(f"pool: {len(ids)} images, grades {pool.astype(int).tolist()}, largest share {pool.max() / pool.sum():.3f}, "
          f"entropy {entropy(pool):.3f}")
    results = {"random": [], f"clusters:{args.level}": []}
    for seed in range(args.seeds):
        rnd = np.random.default_rng(seed).choice(len(ids), args.size, replace=False)
        results["random"].append(histogram([grade[ids[i]] for i in rnd]))
        picked, summary = balance(ws, [{"image_id": i} for i in ids], BalanceSpec(f"clusters:{args.level}", args.size),
                                  seed)
        results[f"clusters:{args.level}"].append(histogram([grade[r["image_id"]] for r in picked]))
    print(f"balanced over {summary['groups']} clusters of level {args.level} (model {summary['model']}), "
          f"{summary['unclustered']} pool images without a cluster")
    stats = {}
    for name, hs in results.items():
        h = np.mean(hs, axis=0)
        share = float(np.mean([x.max() / x.sum() for x in hs]))
        ent = float(np.mean([entropy(x) for x in hs]))
        stats[name] = (share, ent)
        print(f"{name:>12}: grades {np.round(h, 1).tolist()} (mean of {args.seeds} draws of {args.size}), "
              f"largest share {share:.3f}, entropy {ent:.3f}")
    (rs, re_), (bs, be) = stats["random"], stats[f"clusters:{args.level}"]
    print(f"balanced / random: largest share {bs / rs:.3f}, entropy {be / re_:.3f}")


if __name__ == "__main__":
    main()
