"""Is what the platform trains worth training? The whole comparison on the real knees, from the shared data to a
table and a label-efficiency figure, with one command:

    python bench/evidence.py                                  # ingest, curate, shards, pretrain, evaluate, report
    python bench/evidence.py --finetune-seeds 1               # fine-tuning and the supervised CNN: one seed each
    python bench/evidence.py --checkpoint RUN_DIR --parts frozen,report    # evaluate a run that exists
    python bench/evidence.py --parts supervised               # one part (its results are kept; run parts side by side)
    python bench/evidence.py --parts report --docs docs/benchmarks.md     # the table into the docs, between markers

Pretraining goes through the platform's own path: the 2,503 `train` knees of ../shared/data/knee-xray-kl are
registered as a source, ingested (de-identified), curated, built into a shard set, and `ortho pretrain --manifest
... --config cpu-small` trains on it (no label, no val or test image is seen). The evaluation then uses the evaluator's
own code (evaluation/evaluator.py) on the PNGs with the protocol of bench/supervised_baseline.py: fit on train,
choose every hyper-parameter (C, k, the epoch kept) on half of val's patients, report on the other half (95% CIs by
bootstrap over patients). It compares:
- frozen features (linear probe and kNN) of the pretrained backbone, of the same network at random init (3 seeds)
  and of raw pixels (PCA-128 of 64 px), at every label fraction;
- the pretrained backbone fine-tuned at 12.5/25/50/100% of the training patients against the supervised CNN
  (the same RegNetX-200MF from random init) at the same fractions, with the same budget (epochs, steps, batch, lr,
  augmentation, early stopping): the only difference is the initialisation.
Each part's results are saved under <workspace>/evidence/ and reused by later calls.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from supervised_baseline import DATA, knee_task  # noqa: E402

PARTS = ("pretrain", "frozen", "finetune", "supervised", "report")
PATTERN = r"(?P<split>train|val|test)/(?P<label>\d)/(?P<patient>\d+)(?P<laterality>[LR])\.png"
# The supervised CNN's budget (evaluation/supervised.py) given to fine-tuning too: only the initialisation differs.
SAME_BUDGET = ["finetune.epochs=12", "finetune.min_steps=480", "finetune.patience=4", "finetune.batch_size=32",
               "finetune.lr=2e-3", "finetune.warmup_fraction=0.05", "finetune.crop_scale=[0.75,1.0]",
               "finetune.rotation=10", "finetune.intensity_jitter=0.1", "finetune.label_smoothing=0.0",
               "finetune.balanced=false", "supervised.vit=false"]
MARK_START, MARK_END = "<!-- evidence:start -->", "<!-- evidence:end -->"


def ortho(ws: Path, *args: str) -> None:
    cmd = [str(Path(sys.executable).with_name("ortho")), *args, "--workspace", str(ws)]
    print("$", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True)


def pretrain(args) -> Path:
    """The platform's own path from PNG files to a trained backbone; each step skipped when already done."""
    ws = args.workspace
    manifest = ws / "shards" / "knee-train" / "manifest.json"
    if not manifest.is_file():
        if not (ws / "catalog").is_dir():
            ortho(ws, "sources", "add", "knees", str(args.data), "--kind", "public", "--labels", "folder:kl_grade",
                  "--modality", "DX", "--body-part", "knee", "--path-pattern", PATTERN)
        ortho(ws, "ingest")
        ortho(ws, "curate")
        ortho(ws, "shards", "build", "knee-train", "--query", "SELECT image_id FROM images WHERE split = 'train'")
    run_dir = ws / "runs" / f"evidence-{Path(args.config).stem}"
    if (run_dir / "backbone.safetensors").is_file():
        return run_dir
    t0 = time.perf_counter()
    if (run_dir / "run.json").is_file():
        ortho(ws, "pretrain", "--resume", str(run_dir))
    else:
        ortho(ws, "pretrain", "--manifest", str(manifest), "--config", args.config, "--run-dir", str(run_dir))
    print(f"pretraining: {(time.perf_counter() - t0) / 60:.1f} min wall", flush=True)
    return run_dir


def evaluation(args, part: str, overrides: list[str]):
    from evaluation.config import resolve_config

    settings = {"frozen": {"protocols": ["linear", "knn"], "baselines": ["random", "pixels"], "seeds": args.seeds},
                "finetune": {"protocols": ["finetune"], "baselines": [], "seeds": args.finetune_seeds},
                "supervised": {"protocols": ["linear"], "baselines": ["supervised"], "seeds": args.finetune_seeds}}
    return resolve_config(SAME_BUDGET + overrides, settings={**settings[part], "fractions": args.fractions,
                                                            "n_boot": args.n_boot})


def run_part(args, part: str, checkpoint: Path | None) -> list[dict]:
    """One part of the comparison through the evaluator, saved as <workspace>/evidence/<part>.json after every
    label fraction; a fraction already there (every seed) is not run again."""
    import dataclasses

    import torch

    from catalog.workspace import Workspace
    from evaluation.backbones import load_checkpoint
    from evaluation.data import eval_splits
    from evaluation.evaluator import NO_CHECKPOINT, Evaluation

    torch.set_num_threads(args.threads)
    task, images = knee_task(Path(args.data))
    splits = eval_splits(task)
    cfg = evaluation(args, part, args.overrides)
    path = args.workspace / "evidence" / f"{part}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = json.loads(path.read_text()) if path.is_file() else {"part": part, "seconds": 0, "results": []}
    if doc.get("checkpoint", str(checkpoint)) != str(checkpoint) and part != "supervised":
        doc = {"part": part, "seconds": 0, "results": []}  # another checkpoint: start over
    main = load_checkpoint(checkpoint) if part != "supervised" else None
    # frozen probes: every fraction in one go (cheap, and the random-init features are embedded once)
    batches = [cfg.fractions] if part == "frozen" else [[f] for f in cfg.fractions]
    for fractions in batches:
        done = {(r["model"], r["fraction"], r["seed"]) for r in doc["results"]}
        if part != "frozen" and all((("supervised" if part == "supervised" else "pretrained"), fractions[0], s)
                                    in done for s in range(cfg.seeds)):
            continue
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            ev = Evaluation(Workspace.open(Path(tmp) / "ws"), dataclasses.replace(cfg, fractions=fractions),
                            f"evidence-{part}", images=images,
                            on_progress=lambda *_: _progress(ev))
            if part == "supervised":
                ev.supervised(task, splits, False, dict(NO_CHECKPOINT))
            elif part == "frozen":
                ev.run_task(task, splits, main, [])
            else:
                ev.checkpoint(task, splits, main, False, {"knee"}, is_main=True)
        for r in ev.results:
            r.pop("history", None)
        keep = [r for r in doc["results"] if r["fraction"] not in fractions]
        doc.update(results=keep + ev.results, checkpoint=str(checkpoint), load_average=os.getloadavg()[0],
                   seconds=doc["seconds"] + round(time.perf_counter() - t0),
                   settings={"fractions": cfg.fractions, "seeds": cfg.seeds})
        path.write_text(json.dumps(doc, indent=1, default=float) + "\n")
    print(f"{part}: {len(doc['results'])} results, {doc['seconds'] / 60:.1f} min", flush=True)
    return doc["results"]


def _progress(ev) -> None:
    """Each result once, as it is scored (the evaluator also reports stages, which add none)."""
    for r in ev.results[getattr(ev, "printed", 0):]:
        b = r.get("budget") or {}
        q = r["metrics"]["qwk"]
        print(f"  {r['model']} {r['protocol']} {r['fraction']:g} seed {r['seed']}: QWK {q[0]:.3f} [{q[1]:.3f}, "
              f"{q[2]:.3f}]" + (f" ({b['epochs_run']} epochs, {b['seconds']:.0f} s)" if b else ""), flush=True)
    ev.printed = len(ev.results)


def load_results(ws: Path) -> tuple[list[dict], dict]:
    results, meta = [], {}
    for part in ("frozen", "finetune", "supervised"):
        path = ws / "evidence" / f"{part}.json"
        if path.is_file():
            doc = json.loads(path.read_text())
            results += doc["results"]
            meta[part] = doc
    return results, meta


def table(results: list[dict]) -> list[str]:
    """Markdown rows: QWK per model, protocol and label fraction; the mean over seeds, the first seed's 95% CI
    (bootstrap over test patients) and, with several seeds, their range."""
    from evaluation.report import group_results

    groups = group_results(results, "kl_grade")
    fractions = sorted({f for v in groups.values() for f in v}, reverse=True)
    rows = ["| features | protocol | " + " | ".join(f"{f * 100:g}% of patients" for f in fractions) + " |",
            "| --- | --- |" + " --- |" * len(fractions)]
    for key in ORDER:
        if key not in groups:
            continue
        cells = []
        for f in fractions:
            runs = groups[key].get(f) or []
            qs = [r["metrics"]["qwk"][0] for r in runs]
            ci = runs[0]["metrics"]["qwk"] if runs else None
            cells.append(f"{np.mean(qs):.3f} [{ci[1]:.3f}, {ci[2]:.3f}]" + (
                f" ({len(qs)} seeds: {min(qs):.3f}-{max(qs):.3f})" if len(qs) > 1 else "") if runs else "")
        rows.append(f"| {NAMES[key[0]]} | {PROTOCOLS.get(key[1], key[1])} | " + " | ".join(cells) + " |")
    return rows


ORDER = [("pretrained", "linear"), ("random", "linear"), ("pixels", "linear"), ("pretrained", "knn"),
         ("random", "knn"), ("pixels", "knn"), ("pretrained", "finetune"), ("supervised", "train"),
         ("majority", "majority")]
NAMES = {"pretrained": "SSL (cpu-small)", "random": "random init", "pixels": "raw pixels (PCA-128)",
         "supervised": "supervised CNN", "majority": "majority class"}
PROTOCOLS = {"train": "trained from random init", "finetune": "fine-tuned", "knn": "kNN"}


def report(args) -> None:
    from evaluation.report import group_results, label_efficiency_sentence, plot_label_efficiency

    results, meta = load_results(args.workspace)
    if not results:
        sys.exit("no results yet: run the other parts first")
    groups = group_results(results, "kl_grade")
    rows = table(results)
    sentence = label_efficiency_sentence(groups, "qwk")
    curve = plot_label_efficiency({k: v for k, v in groups.items() if k in (("pretrained", "finetune"),
                                                                           ("supervised", "train"))}, "qwk",
                                  "kl_grade (real knees)")
    figure = args.workspace / "evidence" / "label_efficiency.png"
    if curve:
        figure.write_bytes(curve)
    timing = "; ".join(f"{p} {d['seconds'] / 60:.0f} min (load {d['load_average']:.1f})" for p, d in meta.items())
    text = "\n".join(rows) + f"\n\n{sentence}\n\nEvaluation time: {timing}.\n"
    print(text)
    print(f"figure: {figure}" if curve else "no label-efficiency figure (one fraction only)")
    if args.docs:
        if curve:
            docs_fig = Path(args.docs).parent / "figures" / "label_efficiency_kl.png"
            docs_fig.parent.mkdir(exist_ok=True)
            docs_fig.write_bytes(curve)
            text += f"\n![label efficiency](figures/{docs_fig.name})\n"
        _write_between_markers(Path(args.docs), text)


def _write_between_markers(path: Path, text: str) -> None:
    doc = path.read_text()
    if MARK_START not in doc:
        sys.exit(f"{path} has no {MARK_START} ... {MARK_END} block to write the table into")
    head, rest = doc.split(MARK_START, 1)
    _, tail = rest.split(MARK_END, 1)
    path.write_text(f"{head}{MARK_START}\n{text}{MARK_END}{tail}")
    print(f"written into {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("overrides", nargs="*", help="evaluation settings, key=value (finetune.epochs=20)")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--workspace", type=Path, default=Path(tempfile.gettempdir()) / "ortho-evidence")
    ap.add_argument("--config", default="cpu-small", help="pretraining config (bundled name or YAML)")
    ap.add_argument("--checkpoint", type=Path, help="evaluate this run folder or backbone instead of pretraining")
    ap.add_argument("--parts", default=",".join(PARTS))
    ap.add_argument("--fractions", default="1.0,0.5,0.25,0.125")
    ap.add_argument("--seeds", type=int, default=3, help="frozen probes: random-init seeds and label subsets")
    ap.add_argument("--finetune-seeds", type=int, default=3, help="fine-tuning and the supervised CNN")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--docs", help="write the table between the evidence markers of this markdown file")
    args = ap.parse_args()
    args.fractions = [float(f) for f in args.fractions.split(",")]
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        sys.exit(f"unknown part {unknown[0]!r}: choose from {', '.join(PARTS)}")
    if not args.data.is_dir():
        sys.exit(f"no knee radiographs at {args.data} (see ../shared/data/README.md)")
    args.workspace = args.workspace.absolute()
    checkpoint = args.checkpoint
    if "pretrain" in parts and checkpoint is None:
        checkpoint = pretrain(args)
    if checkpoint is None:
        checkpoint = args.workspace / "runs" / f"evidence-{Path(args.config).stem}"
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; checkpoint {checkpoint}", flush=True)
    for part in ("frozen", "finetune", "supervised"):
        if part in parts:
            run_part(args, part, checkpoint)
    if "report" in parts:
        report(args)


if __name__ == "__main__":
    main()
