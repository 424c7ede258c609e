"""Does pretraining on a cluster-balanced subset beat a random subset of the same size? Same recipe, same steps,
held-out kNN and linear probe on the task's `val` split (bench/pretrain_cpu.py's protocols).

    P="SELECT image_id FROM images WHERE split = 'train' AND source = 'knees'"
    ortho shards build bal500 --query "$P" --balance clusters:2 --target 500 --seed 0
    ortho shards build rnd500 --query "$P ORDER BY hash(image_id) LIMIT 500"
    ortho pretrain --manifest WS/shards/bal500/manifest.json --config configs/pretrain/cpu-tiny.yaml \\
          --run-dir WS/runs/bal500 train.steps=S ...          # the same overrides for both runs
    ortho pretrain --manifest WS/shards/rnd500/manifest.json ... --run-dir WS/runs/rnd500 train.steps=S ...
    python bench/balance_pretrain.py --workspace WS --balanced WS/runs/bal500 --random WS/runs/rnd500

Printed: the KL histogram of each run's shard set (read from its tars), each run's steps, last loss and collapse
warnings (metrics.jsonl), kNN and linear-probe accuracy and QWK on `val` with 95% CIs over patients, the ratio
balanced / random, a paired bootstrap CI of the difference (same resampled patients for both), and the same
architecture at random init (baseline in the same run).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tarfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from balance_kl import entropy  # noqa: E402
from catalog.files import file_sha256  # noqa: E402
from catalog.workspace import Workspace  # noqa: E402
from evaluation.data import load_task  # noqa: E402
from evaluation.metrics import compute  # noqa: E402
from pretrain_cpu import evaluate, features  # noqa: E402
from training.backbone import build_backbone, load_exported  # noqa: E402

SHOWN = ("accuracy", "qwk")


def shard_image_ids(manifest: Path) -> list[str]:
    m = json.loads(manifest.read_text())
    ids = []
    for shard in m["shards"]:
        with tarfile.open(manifest.parent / shard["file"]) as tar:
            ids += sorted({Path(n).stem for n in tar.getnames() if n.endswith(".json")})
    return ids


def _short(collapse: str) -> str:
    m = re.match(r"(step \d+): the (\S+) head", collapse)
    return f"{m[1]}: {m[2]}" if m else collapse


def run_summary(run: Path) -> dict:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    cfg = json.loads((run / "run.json").read_text())
    return {"steps": rows[-1]["step"], "loss": rows[-1]["loss"], "manifest": Path(cfg["manifest"]),
            "collapse": sorted({_short(msg) for r in rows for msg in r.get("collapse", [])}),
            "dino": rows[-1].get("dino"), "ibot": rows[-1].get("ibot")}


def paired_diff(y, pa, pb, patients, n_classes, n_boot=1000, seed=0) -> dict:
    """{metric: (a - b, low, high)}, resampling patients once for both predictions."""
    uniq, inverse = np.unique(patients, return_inverse=True)
    members = [np.flatnonzero(inverse == i) for i in range(len(uniq))]
    rng = np.random.default_rng(seed)
    draws = {m: [] for m in SHOWN}
    for _ in range(n_boot):
        idx = np.concatenate([members[i] for i in rng.integers(0, len(uniq), len(uniq))])
        for m in SHOWN:
            draws[m].append(compute(m, y[idx], pa[idx], None, n_classes) - compute(m, y[idx], pb[idx], None, n_classes))
    return {m: (compute(m, y, pa, None, n_classes) - compute(m, y, pb, None, n_classes),
                *np.quantile(draws[m], [0.025, 0.975])) for m in SHOWN}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workspace", required=True)
    ap.add_argument("--balanced", required=True, help="finished run folder trained on the balanced shard set")
    ap.add_argument("--random", required=True, help="finished run folder trained on the random shard set")
    ap.add_argument("--task", default="kl_grade")
    ap.add_argument("--random-init-seeds", type=int, default=3)
    ap.add_argument("--pool", default="both", choices=["cls", "mean", "both"])
    args = ap.parse_args()
    ws = Workspace.open(args.workspace)
    data = load_task(ws, args.task)
    tr, va = np.flatnonzero(data.splits == "train"), np.flatnonzero(data.splits == "val")
    n_classes, metrics = len(data.classes), list(SHOWN)
    grade = dict(zip(data.image_ids, data.labels))
    print(f"{args.task}: probe fitted on {len(tr)} train images, read on {len(va)} val images "
          f"({len(set(data.patients[va]))} patients)")

    results, preds = {}, {}
    for name, run in (("balanced", Path(args.balanced)), ("random", Path(args.random))):
        s = run_summary(run)
        ids = shard_image_ids(s["manifest"])
        assert all(data.splits[data.image_ids.index(i)] == "train" for i in ids if i in grade), "held-out image"
        h = np.bincount([grade[i] for i in ids if i in grade], minlength=n_classes)
        print(f"{name:>8}: {s['manifest'].parent.name}, {len(ids)} images, grades {h.tolist()}, largest share "
              f"{h.max() / h.sum():.3f}, entropy {entropy(h.astype(float)):.3f}; {s['steps']} steps, last loss "
              f"{s['loss']:.3f} (DINO {s['dino']:.3f}, iBOT {s['ibot']:.3f}), collapse: {s['collapse'] or 'none'}")
        model, spec = load_exported(run / "backbone.safetensors")
        x = features(ws, model, spec, data.image_ids, file_sha256(run / "backbone.safetensors")[:16], args.pool)
        results[name] = evaluate(x[tr], x[va], data, tr, va, n_classes, metrics, return_pred=True)
    for seed in range(args.random_init_seeds):
        torch.manual_seed(seed)
        rnd, rspec, _ = build_backbone(spec.name, spec.in_chans, spec.img_size, kwargs=spec.kwargs)
        x = features(ws, rnd, rspec, data.image_ids, None, args.pool)
        results[f"random-init-{seed}"] = evaluate(x[tr], x[va], data, tr, va, n_classes, metrics, seed=seed,
                                                 return_pred=True)

    fmt = lambda v: f"{v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}]"  # noqa: E731
    print(f"\n| backbone | protocol | {' | '.join(SHOWN)} |\n| --- | --- | {' | '.join('---' for _ in SHOWN)} |")
    for name, protos in results.items():
        for proto, r in protos.items():
            print(f"| {name} | {proto} | {' | '.join(fmt(r['metrics'][m]) for m in SHOWN)} |")
    y = data.labels[va]
    for proto in ("knn", "linear"):
        b, r = results["balanced"][proto], results["random"][proto]
        ratio = " | ".join(f"x{b['metrics'][m][0] / r['metrics'][m][0]:.3f}" for m in SHOWN)
        diff = paired_diff(y, b["pred"], r["pred"], data.patients[va], n_classes)
        print(f"| balanced / random | {proto} | {ratio} |\n| balanced - random (paired) | {proto} | "
              f"{' | '.join(f'{d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}]' for d in diff.values())} |")


if __name__ == "__main__":
    main()
