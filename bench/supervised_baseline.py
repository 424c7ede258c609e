"""The supervised baseline (`ortho evaluate --baseline supervised`) on the real knees: does a CNN trained from
random init under the stated budget learn KL grades, at 100%, 50%, 25% and 12.5% of the training patients?

    python bench/supervised_baseline.py                          # the whole table (4 fractions x 3 seeds)
    python bench/supervised_baseline.py --fractions 1.0 --seeds 1 --jobs 1 supervised.epochs=2   # one quick run
    python bench/supervised_baseline.py --cv                     # the cross-validation path, no train split

Reads ../shared/data/knee-xray-kl (224x224 8-bit PNG; 2,503 train / 826 val knees, patient-disjoint; the
patient is the OAI participant id of the file name) straight from the files, with no ingest: a TaskData as
`load_task` builds from the catalog, then the evaluator's own `supervised` and raw-pixel baselines
(evaluation/evaluator.py), so the figures are what `ortho evaluate` computes. Protocol as in `ortho evaluate`:
fit on train, choose every hyper-parameter (the epoch kept, C) on half of val's patients, report on the other
half (the halves come from a hash of the patient id; the catalog hashes its pseudonyms, so an ingested copy
holds other halves of the same size). Prints per label fraction and seed the CNN's QWK, accuracy, epochs and
wall time, beside the raw-pixel linear probe (PCA-128 of 64 px) of the same run and their ratio. Two processes of
one torch thread each (--jobs 2 --threads 1) share the runs out: on 2 shared cores they lose less to other
processes' load than one process of two threads.

With --cv, 1,656 knees are all declared `test` (a held-out set ingested alone: no train split), so the evaluation
cross-validates (patient-grouped 5-fold); prints the seconds of the whole task (embedding, frozen probes on the
checkpoint, random init and raw pixels, majority, bootstrap CIs).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from catalog.tasks import TASKS  # noqa: E402
from catalog.workspace import Workspace  # noqa: E402
from evaluation.config import resolve_config  # noqa: E402
from evaluation.data import TaskData, eval_splits  # noqa: E402
from evaluation.evaluator import NO_CHECKPOINT, Evaluation  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "knee-xray-kl"


class PngImages:
    """Anything with .get(image_id) -> pixels serves the evaluator (as the store or a shard set does)."""

    def __init__(self, paths: dict[str, Path]):
        self.paths = paths

    def get(self, image_id: str) -> np.ndarray:
        from PIL import Image

        return np.asarray(Image.open(self.paths[image_id]).convert("L"))


def knee_task(root: Path, all_test: bool = False) -> tuple[TaskData, PngImages]:
    """kl_grade over the PNG tree: one row per knee, its split from the top folder, its grade from the next."""
    files = sorted(root.glob("*/[0-4]/*.png"))
    if not files:
        sys.exit(f"no knee PNGs under {root} (see ../shared/data/README.md)")
    spec = TASKS["kl_grade"]
    ids = [f"{f.parent.parent.name}-{f.stem}" for f in files]
    patients = np.array([f.stem.rstrip("LR") for f in files])
    splits = np.array(["test" if all_test else f.parent.parent.name for f in files])
    labels = np.array([spec.classes.index(f.parent.name) for f in files], dtype=np.int64)
    n = len(files)
    task = TaskData("kl_grade", spec.kind, spec.classes, ids, patients, splits, labels, np.array(ids),
                    np.array(["DX"] * n), np.array(["knee"] * n), spec)
    return task, PngImages(dict(zip(ids, files)))


def knee_config(args, overrides: list[str], fractions: list[float]):
    return resolve_config(overrides, settings={"protocols": ["linear"], "fractions": fractions, "seeds": args.seeds,
                                               "baselines": ["supervised", "pixels"], "n_boot": args.n_boot})


def run_baselines(args, overrides: list[str]) -> list[dict]:
    """The raw-pixel probe here, the CNN's runs in --jobs processes (label fractions shared out by cost)."""
    task, images = knee_task(Path(args.data))
    splits = eval_splits(task)
    cfg = knee_config(args, overrides, args.fractions)
    sp = splits.describe(task)
    print(f"fit {sp['fit']['images']} knees ({sp['fit']['patients']} patients), select {sp['select']['images']} "
          f"({sp['select']['patients']}), test {sp['test']['images']} ({sp['test']['patients']}); "
          f"supervised: {cfg.supervised}", flush=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        ev = Evaluation(Workspace.open(Path(tmp) / "ws"), cfg, "bench", images=images,
                        on_progress=lambda done, total, label: _progress(ev, label))
        ev.raw_pixels(task, splits, False, dict(NO_CHECKPOINT))
    print(f"raw pixels: {time.perf_counter() - t0:.0f} s", flush=True)
    shares: list[list[float]] = [[] for _ in range(args.jobs)]
    for f in sorted(args.fractions, reverse=True):  # a run costs about its fraction: largest first, to the lightest
        min(shares, key=sum).append(f)
    jobs = [(args, overrides, fs) for fs in shares if fs]
    if len(jobs) == 1:
        return ev.results + supervised_runs(jobs[0])
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    with ProcessPoolExecutor(len(jobs), mp_context=get_context("spawn")) as pool:
        return ev.results + [r for part in pool.map(supervised_runs, jobs) for r in part]


def supervised_runs(job) -> list[dict]:
    """The evaluator's supervised baseline at some label fractions (every seed), in this process."""
    import torch

    args, overrides, fractions = job
    torch.set_num_threads(args.threads)
    task, images = knee_task(Path(args.data))
    splits = eval_splits(task)
    with tempfile.TemporaryDirectory() as tmp:
        ev = Evaluation(Workspace.open(Path(tmp) / "ws"), knee_config(args, overrides, fractions), "bench",
                        images=images, on_progress=lambda done, total, label: _progress(ev, label))
        ev.supervised(task, splits, False, dict(NO_CHECKPOINT))
    return ev.results


def _progress(ev: Evaluation, label: str) -> None:
    r = ev.results[-1]
    b = r.get("budget") or {}
    print(f"  {label} seed {r['seed']}: QWK {r['metrics']['qwk'][0]:.3f} acc {r['metrics']['accuracy'][0]:.3f}"
          + (f" epochs {b['epochs_run']} (best {r['chosen']['epoch']}) {b['seconds']:.0f} s" if b else ""),
          flush=True)


def print_table(results: list[dict]) -> None:
    pixels = {r["fraction"]: [] for r in results}
    for r in results:
        if r["model"] == "pixels":
            pixels[r["fraction"]].append(r["metrics"]["qwk"][0])
    sup = [r for r in results if r["model"] == "supervised"]
    print(f"\n{'fraction':>8} {'seed':>4} {'n_fit':>6} {'QWK':>6} {'95% CI':>15} {'acc':>6} {'epochs':>6} "
          f"{'best':>4} {'seconds':>7} {'pixels QWK':>10} {'ratio':>6}")
    total = 0.0
    for r in sorted(sup, key=lambda r: (-r["fraction"], r["seed"])):
        q, lo, hi = r["metrics"]["qwk"]
        px = float(np.mean(pixels[r["fraction"]]))
        b = r["budget"]
        total += b["seconds"]
        print(f"{r['fraction']:>8g} {r['seed']:>4} {r['n_fit']:>6} {q:>6.3f} [{lo:.3f}, {hi:.3f}] "
              f"{r['metrics']['accuracy'][0]:>6.3f} {b['epochs_run']:>6} {r['chosen']['epoch']:>4} "
              f"{b['seconds']:>7.0f} {px:>10.3f} {q / px:>6.2f}")
    print(f"\n{'fraction':>8} {'CNN QWK mean (min-max)':>24} {'acc mean':>8} {'pixels QWK':>10} {'ratio':>6}")
    for f in sorted({r["fraction"] for r in sup}, reverse=True):
        qs = [r["metrics"]["qwk"][0] for r in sup if r["fraction"] == f]
        acc = np.mean([r["metrics"]["accuracy"][0] for r in sup if r["fraction"] == f])
        px = float(np.mean(pixels[f]))
        print(f"{f:>8g} {np.mean(qs):>8.3f} ({min(qs):.3f}-{max(qs):.3f}) {acc:>12.3f} {px:>10.3f} "
              f"{np.mean(qs) / px:>6.2f}")
    if sup:
        b = sup[0]["budget"]
        print(f"\nbudget: {b['model']} ({b['params'] / 1e6:.1f}M parameters) at {b['img_size']} px, up to "
              f"{b['epochs']} epochs (patience {b['patience']}), batch {b['batch_size']}, {b['threads']} threads; "
              f"{len(sup)} runs, {total / 60:.1f} min of run time summed over processes")


def time_cross_validation(args, overrides: list[str]) -> None:
    """`ortho evaluate --protocol linear,knn --baseline random --baseline pixels --seeds 3` on a task whose every
    image is in one split: the patient-grouped k-fold path, end to end from the PNGs (embedding with a
    randomly initialised cpu-tiny ViT at 64 px: the same cost as a trained one)."""
    from evaluation.backbones import Backbone
    from training.backbone import build_backbone

    task, images = knee_task(Path(args.data), all_test=True)
    keep = np.sort(np.random.default_rng(0).permutation(len(task.labels))[:args.cv_images])
    task = task.subset(keep)
    cfg = resolve_config(overrides, settings={"protocols": ["linear", "knn"], "seeds": 3,
                                              "baselines": ["random", "pixels"], "n_boot": args.n_boot})
    model, spec, _ = build_backbone("vit_tiny_patch8_dinov3", 1, 64, kwargs={"depth": 4})
    main = Backbone("pretrained", model.eval(), spec, None, None, {})
    t0 = time.perf_counter()
    splits = eval_splits(task)
    with tempfile.TemporaryDirectory() as tmp:
        ev = Evaluation(Workspace.open(Path(tmp) / "ws"), cfg, "bench-cv", images=images)
        summary = ev.run_task(task, splits, main, [])
    secs = time.perf_counter() - t0
    print(f"{len(task.labels)} knees, {len(set(task.patients))} patients, no train split: {splits.cv} "
          f"({len(splits.folds)} folds); {len(ev.results)} results in {secs:.0f} s; notes: {summary['notes']}")
    for r in ev.results:
        print(f"  {r['model']:>10} {r['protocol']:>8} seed {r['seed']}: QWK {r['metrics']['qwk'][0]:.3f} "
              f"acc {r['metrics']['accuracy'][0]:.3f} (n_test {r['n_test']})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("overrides", nargs="*", help="evaluation settings, key=value (supervised.epochs=20)")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--fractions", default="1.0,0.5,0.25,0.125")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--jobs", type=int, default=2, help="processes training the CNN side by side")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--cv", action="store_true", help="time the cross-validation path instead")
    ap.add_argument("--cv-images", type=int, default=1656)
    args = ap.parse_args()
    args.fractions = [float(f) for f in args.fractions.split(",")]
    import torch

    torch.set_num_threads(args.threads)
    if args.cv:
        time_cross_validation(args, args.overrides)
        return
    t0 = time.perf_counter()
    print(f"load average at start {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    print_table(run_baselines(args, args.overrides))
    print(f"wall time {(time.perf_counter() - t0) / 60:.1f} min ({args.jobs} processes x {args.threads} threads); "
          f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
