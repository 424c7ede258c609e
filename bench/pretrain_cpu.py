"""CPU proof of pretraining: does a short self-supervised run beat random init on a labelled task?

    python bench/pretrain_cpu.py --workspace WS --run WS/runs/RUN [--task kl_grade] [--seeds 3]
    python bench/pretrain_cpu.py --workspace WS --train --manifest M --config cpu-tiny [key=value ...]

Reports, on the task's `val` split, kNN and linear-probe accuracy and QWK (95% CIs, bootstrap over
patients) for: the run's backbone (its teacher), the same architecture at random init (several
seeds), raw pixels (PCA-128 of 64 px images) and the majority class. The linear probe chooses its
regularisation by patient-grouped CV on `train`, never on `val`. Results go to
WS/evals/cpu-proof-<run>.json and a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from catalog.workspace import Workspace  # noqa: E402
from evaluation.data import load_task  # noqa: E402
from evaluation.embed import embed_images, pixel_features  # noqa: E402
from evaluation.metrics import bootstrap_ci, metric_set, quadratic_kappa  # noqa: E402
from evaluation.protocols import knn_predict, linear_probe, majority_predict, pca_fit_transform  # noqa: E402
from catalog.files import file_sha256  # noqa: E402
from training.backbone import build_backbone, load_exported  # noqa: E402


def features(ws, model, spec, ids, cache_key, pool):
    cls, mean = embed_images(ws, model, ids, spec.img_size, spec.mean[0], spec.std[0], cache_key=cache_key)
    return {"cls": cls, "mean": mean, "both": np.concatenate([cls, mean], 1)}[pool]


def evaluate(train_x, val_x, data, tr, va, n_classes, metrics, seed=0, knn_k=20, return_pred=False):
    out = {}
    select = (lambda y, p: quadratic_kappa(y, p, n_classes)) if "qwk" in metrics else None
    protocols = {"knn": lambda: knn_predict(train_x, data.labels[tr], val_x, n_classes, k=knn_k),
                 "linear": lambda: linear_probe(train_x, data.labels[tr], data.patients[tr], val_x, n_classes,
                                                select_metric=select, seed=seed)}
    for proto, run in protocols.items():
        p = run()
        ci = bootstrap_ci(data.labels[va], p.pred, p.proba, data.patients[va], metrics, n_classes, seed=seed)
        out[proto] = {"metrics": ci, "chosen": p.chosen, **({"pred": p.pred} if return_pred else {})}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("overrides", nargs="*")
    ap.add_argument("--workspace", required=True)
    ap.add_argument("--run", help="a finished pretraining run folder")
    ap.add_argument("--train", action="store_true", help="pretrain first (needs --manifest)")
    ap.add_argument("--manifest")
    ap.add_argument("--config", default="cpu-tiny")
    ap.add_argument("--task", default="kl_grade")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--pool", default="both", choices=["cls", "mean", "both"])
    args = ap.parse_args()
    ws = Workspace.open(args.workspace)
    if args.train:
        from catalog.ids import new_pretrain_id
        from training.trainer import run_pretraining

        run_dir = ws.train_runs_dir / new_pretrain_id()
        t0 = time.time()
        run_pretraining(args.manifest, args.config, args.overrides, run_dir)
        print(f"pretraining took {time.time() - t0:.0f} s")
    else:
        run_dir = Path(args.run)
    backbone_path = run_dir / "backbone.safetensors"
    model, spec = load_exported(backbone_path)
    data = load_task(ws, args.task)
    tr, va = np.flatnonzero(data.splits == "train"), np.flatnonzero(data.splits == "val")
    if not len(tr) or not len(va):
        raise SystemExit(f"task {args.task} needs labelled train and val images (found {len(tr)} and {len(va)})")
    n_classes, metrics = len(data.classes), metric_set(data.kind)
    ids = data.image_ids
    results: dict = {"run": str(run_dir), "task": args.task, "n_train": len(tr), "n_val": len(va),
                     "val_patients": len(set(data.patients[va])), "pool": args.pool, "models": {}}

    t0 = time.time()
    x = features(ws, model, spec, ids, file_sha256(backbone_path)[:16], args.pool)
    results["models"]["pretrained"] = evaluate(x[tr], x[va], data, tr, va, n_classes, metrics)
    print(f"pretrained features in {time.time() - t0:.0f} s")
    for seed in range(args.seeds):
        torch.manual_seed(seed)
        rnd, rspec, _ = build_backbone(spec.name, spec.in_chans, spec.img_size, kwargs=spec.kwargs)
        x = features(ws, rnd, rspec, ids, None, args.pool)
        results["models"][f"random-{seed}"] = evaluate(x[tr], x[va], data, tr, va, n_classes,
                                                       metrics, seed=seed)
    px = pixel_features(ws, ids, 64)
    ptr, (pva,) = pca_fit_transform(px[tr], [px[va]], 128)
    results["models"]["pixels-pca128"] = evaluate(ptr, pva, data, tr, va, n_classes, metrics)
    maj = majority_predict(data.labels[tr], len(va), n_classes)
    results["models"]["majority"] = {"majority": {"metrics": bootstrap_ci(
        data.labels[va], maj.pred, maj.proba, data.patients[va], metrics, n_classes), "chosen": maj.chosen}}
    out = ws.root / "evals" / f"cpu-proof-{run_dir.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print_table(results, metrics)
    print(f"results: {out}")


def print_table(results: dict, metrics: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    shown = [m for m in ("accuracy", "qwk", "auroc") if m in metrics]
    t = Table("features", "protocol", *shown,
              title=f"{results['task']} on val ({results['n_val']} images, {results['val_patients']} patients), "
                    f"95% CI over patients")
    for name, protos in results["models"].items():
        for proto, r in protos.items():
            t.add_row(name, proto, *[f"{r['metrics'][m][0]:.3f} [{r['metrics'][m][1]:.3f}, {r['metrics'][m][2]:.3f}]"
                                     for m in shown])
    Console().print(t)


if __name__ == "__main__":
    main()
