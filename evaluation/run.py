"""One evaluation: a checkpoint (and its baselines) on downstream tasks, with every protocol and label
fraction asked for, scored on each task's untouched test part.

    run_evaluation(ws, "runs/<run>/backbone.safetensors", ["kl_grade"], EvalConfig(...))

Models compared, side by side:
  pretrained   the checkpoint under evaluation (frozen for kNN/linear; trained further by finetune)
  random       the same architecture at random init (one init per seed), frozen
  supervised   the same architecture from random init, fine-tuned on the task with the finetune budget
  pixels       raw pixels (PCA-128 of 64 px images): what any representation must beat
  majority     the most frequent training class
  <name>       any local checkpoint given as a baseline (e.g. Meta's DINOv3 weights), like pretrained

Writes evals/<eval_id>/metrics.json and one catalog row per result (the `evals` view), only when
every result is in: a killed evaluation leaves no half record, and re-running it with the same id
replaces it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from catalog import schema
from catalog.parts import write_table
from catalog.workspace import Workspace
from evaluation.data import (EvalSplits, EvaluationError, ShardImages, TaskData, aggregate, eval_splits,
                             exam_groups, label_fraction, load_task)
from evaluation.embed import embed_images, pixel_features
from evaluation.finetune import FinetuneConfig, finetune, load_pixels
from evaluation.metrics import bootstrap_ci, confusion, metric_set, quadratic_kappa, auroc, balanced_accuracy
from evaluation.protocols import (Predictions, knn_predict, knn_select, linear_probe, majority_predict,
                                  pca_fit_transform)
from shards.manifest import file_sha256
from training.backbone import BackboneSpec, CheckpointError, build_backbone, load_exported

FROZEN = ("linear", "knn")
PROTOCOLS = ("linear", "knn", "finetune")
BUILTIN_BASELINES = ("random", "supervised", "pixels")
XRAY = {"DX", "CR", "DR", "RG", "RF", "XA", "PX", "MG"}


@dataclass
class EvalConfig:
    protocols: list[str] = field(default_factory=lambda: ["linear", "knn"])
    fractions: list[float] = field(default_factory=lambda: [1.0])
    seeds: int = 3
    baselines: list[str] = field(default_factory=lambda: ["random"])
    pool: str = "both"  # cls | mean | both (concatenated)
    knn_ks: tuple[int, ...] = (10, 20, 50)
    knn_temperature: float = 0.07
    linear_cs: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0, 10.0)  # 1.0 was often chosen: the sweep goes past it
    exam_aggregation: str = "mean"  # slices -> exam: mean (default) or max of features / probabilities
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    n_boot: int = 1000
    retrieval_queries: int = 5
    batch_size: int = 64

    def __post_init__(self):
        bad = [p for p in self.protocols if p not in PROTOCOLS]
        if bad:
            raise EvaluationError(f"unknown protocol {bad[0]!r}: choose from {', '.join(PROTOCOLS)}")
        if not self.protocols:
            raise EvaluationError("no protocol to run")
        if any(not 0 < f <= 1 for f in self.fractions):
            raise EvaluationError(f"label fractions must be in (0, 1]: {self.fractions}")
        if self.pool not in ("cls", "mean", "both"):
            raise EvaluationError(f"unknown pooling {self.pool!r}: cls, mean or both")
        if self.exam_aggregation not in ("mean", "max"):
            raise EvaluationError(f"unknown exam aggregation {self.exam_aggregation!r}: mean or max")
        if self.seeds < 1:
            raise EvaluationError("seeds must be at least 1")
        self.fractions = sorted(set(float(f) for f in self.fractions))


@dataclass
class Backbone:
    """A model to evaluate: its weights (None for random init), spec and where it came from."""

    name: str
    model: torch.nn.Module | None
    spec: BackboneSpec
    path: str | None
    sha256: str | None
    pretrained_on: dict  # {"body_part": [...], "modality": [...]} of the run's shard set, or {}


# --- models ----------------------------------------------------------------------------------

def _pretraining_domain(path: Path) -> dict:
    """What a run's backbone was pretrained on: the body parts and modalities of its shard set."""
    run_json = path.parent / "run.json"
    if not run_json.is_file():
        return {}
    try:
        run = json.loads(run_json.read_text())
        counts = run.get("counts") or json.loads(Path(run["manifest"]).read_text()).get("counts", {})
    except (OSError, ValueError, KeyError):
        return {}
    return {"body_part": sorted(counts.get("body_part", {})), "modality": sorted(counts.get("modality", {})),
            "shard_set": run.get("shard_set"), "run_id": run.get("run_id")}


def load_checkpoint(path: str | os.PathLike, model_name: str | None = None, img_size: int | None = None,
                    name: str = "pretrained") -> Backbone:
    """A run folder, an exported backbone.safetensors, or (with model_name) any timm/Meta checkpoint."""
    path = Path(path)
    if path.is_dir():
        path = path / "backbone.safetensors"
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (a finished run exports backbone.safetensors)")
    if model_name:
        model, spec, report = build_backbone(model_name, 1, img_size or 224, init=path)
    else:
        if path.suffix != ".safetensors":
            raise CheckpointError(f"checkpoint {path.name}: give the architecture (--model NAME) for a non-exported file")
        model, spec = load_exported(path)
    return Backbone(name, model.eval(), spec, str(path), file_sha256(path), _pretraining_domain(path))


def random_backbone(spec: BackboneSpec, seed: int) -> Backbone:
    torch.manual_seed(seed)
    model, rspec, _ = build_backbone(spec.name, spec.in_chans, spec.img_size, kwargs=spec.kwargs)
    return Backbone("random", model.eval(), rspec, None, None, {})


def parse_baseline(text: str) -> tuple[str, str | None, str | None]:
    """'random' | 'supervised' | 'pixels' | PATH | ARCH=PATH -> (name, path, arch)."""
    if text in BUILTIN_BASELINES:
        return text, None, None
    arch, _, path = text.rpartition("=") if "=" in text else ("", "", text)
    return Path(path).stem if Path(path).name != "backbone.safetensors" else Path(path).parent.name, path, arch or None


# --- domains ---------------------------------------------------------------------------------

def modality_family(modality: str) -> str:
    return "X-ray" if modality in XRAY else modality


def domain_text(body_parts, modalities) -> str:
    parts = sorted(set(body_parts)) or ["unknown"]
    mods = sorted({modality_family(m) for m in modalities}) or ["unknown"]
    return f"{'+'.join(parts)}/{'+'.join(mods)}"


def task_body_parts(task: TaskData) -> set[str]:
    """The body parts of a task's images; where an image's is unknown (a NIfTI file carries none), the
    anatomy the task registry declares for the task."""
    declared = task.spec.anatomy if task.spec and task.spec.anatomy != "unknown" else "unknown"
    return {declared if p == "unknown" else p for p in task.body_parts}


def transfer_kind(pretrained_on: dict, task_parts, task_modalities) -> str:
    """in-domain, cross-anatomy, cross-modality or cross-anatomy+modality (unknown without a run)."""
    if not pretrained_on:
        return "unknown"
    anatomy = not set(task_parts) <= set(pretrained_on.get("body_part", []))
    modality = not ({modality_family(m) for m in task_modalities}
                    <= {modality_family(m) for m in pretrained_on.get("modality", [])})
    return {(False, False): "in-domain", (True, False): "cross-anatomy", (False, True): "cross-modality",
            (True, True): "cross-anatomy+modality"}[(anatomy, modality)]


# --- scoring ---------------------------------------------------------------------------------

def primary_metric(kind: str) -> str:
    return {"ordinal": "qwk", "binary": "auroc"}.get(kind, "balanced_accuracy")


def proba_scorer(kind: str, n_classes: int):
    """The selection score for a task kind, from (labels, probabilities): NaN counts as worst."""
    def score(y, proba):
        if kind == "ordinal":
            value = quadratic_kappa(y, proba.argmax(1), n_classes)
        elif kind == "binary":
            value = auroc(y, proba[:, 1])
        else:
            value = balanced_accuracy(y, proba.argmax(1), n_classes)
        return value if np.isfinite(value) else -np.inf
    return score


@dataclass
class Units:
    """What a protocol scores: images, or exams (slice features aggregated) for exam-level tasks."""

    rows: list[np.ndarray]  # data rows of each unit
    labels: np.ndarray
    patients: np.ndarray


def units_of(data: TaskData, idx: np.ndarray, exam_level: bool) -> Units:
    if exam_level:
        return Units(*exam_groups(data, idx))
    return Units([np.array([i]) for i in idx], data.labels[idx], data.patients[idx])


def unit_features(x: np.ndarray, units: Units, how: str) -> np.ndarray:
    return aggregate(x, units.rows, how) if len(units.rows) else np.zeros((0, x.shape[1]), x.dtype)


# --- the evaluation --------------------------------------------------------------------------

class Evaluation:
    def __init__(self, ws: Workspace, cfg: EvalConfig, eval_id: str, on_progress=None):
        self.ws, self.cfg, self.eval_id = ws, cfg, eval_id
        self.images = None  # the store; or a ShardImages when evaluating from a shard set
        self.results: list[dict] = []
        self.on_progress = on_progress or (lambda *a: None)

    def score(self, task: TaskData, units: Units, p: Predictions, **fields) -> dict:
        names = metric_set(task.kind)
        ci = bootstrap_ci(units.labels, p.pred, p.proba, units.patients, names, task.n_classes,
                          n_boot=self.cfg.n_boot, seed=fields.get("seed", 0))
        result = {"task": task.task, **fields, "n_test": int(len(units.labels)),
                  "test_patients": int(len(set(units.patients))), "metrics": ci,
                  "confusion": confusion(units.labels, p.pred, task.n_classes).tolist(),
                  "chosen": {k: v for k, v in p.chosen.items() if k != "history"},
                  "history": p.chosen.get("history")}
        self.results.append(result)
        return result

    def features(self, bb: Backbone, task: TaskData) -> np.ndarray:
        cache = bb.sha256[:16] if bb.sha256 else None
        cls, mean = embed_images(self.ws, bb.model, task.image_ids, bb.spec.img_size, bb.spec.mean[0],
                                 bb.spec.std[0], cache_key=cache, batch_size=self.cfg.batch_size,
                                 images=self.images)
        return {"cls": cls, "mean": mean, "both": np.concatenate([cls, mean], 1)}[self.cfg.pool]

    def probe(self, protocol: str, task: TaskData, x: np.ndarray, fit_rows: np.ndarray, sel_rows: np.ndarray,
              test_rows: np.ndarray, exam_level: bool, seed: int) -> tuple[Predictions, Units, int]:
        """One frozen-feature probe: fitted on fit_rows, hyper-parameters chosen on sel_rows (or, when
        there are none, by patient-grouped CV inside fit_rows), predictions for test_rows' units."""
        how = self.cfg.exam_aggregation
        score = proba_scorer(task.kind, task.n_classes)
        fit, test = units_of(task, fit_rows, exam_level), units_of(task, test_rows, exam_level)
        x_fit, x_test = unit_features(x, fit, how), unit_features(x, test, how)
        sel = units_of(task, sel_rows, exam_level) if len(sel_rows) else None
        x_sel = unit_features(x, sel, how) if sel else None
        if protocol == "linear":
            select_metric = (lambda y, pred: score(y, np.eye(task.n_classes)[pred]))
            p = linear_probe(x_fit, fit.labels, fit.patients, x_test, task.n_classes, cs=self.cfg.linear_cs,
                             seed=seed, select=(x_sel, sel.labels) if sel else None, select_score=score,
                             select_metric=select_metric)
        elif sel:
            p = knn_select(x_fit, fit.labels, x_sel, sel.labels, x_test, task.n_classes, ks=self.cfg.knn_ks,
                           temperature=self.cfg.knn_temperature, select_score=score)
        else:  # nothing to choose k on: the smallest k of the sweep
            p = knn_predict(x_fit, fit.labels, x_test, task.n_classes, min(self.cfg.knn_ks), self.cfg.knn_temperature)
        return p, test, len(fit.labels)

    def frozen(self, task: TaskData, splits: EvalSplits, x: np.ndarray, model: str, seeds_for,
               exam_level: bool, common: dict) -> None:
        """kNN and linear probes on frozen features x [N, D], at every label fraction and its seeds;
        with cross-validation folds, the held-out predictions of every fold pooled."""
        folds = splits.folds or [(splits.fit, splits.test)]
        for fraction in self.cfg.fractions:
            for seed in seeds_for(fraction):
                for protocol in (p for p in self.cfg.protocols if p in FROZEN):
                    parts = [self.probe(protocol, task, x, label_fraction(task, fit, fraction, seed),
                                        splits.select, test, exam_level, seed) for fit, test in folds]
                    p, test, n_fit = _pool(parts)
                    self.score(task, test, p, model=model, protocol=protocol, fraction=fraction, seed=seed,
                               n_fit=n_fit, **common)
                    self.tick(f"{task.task}: {model} {protocol} {fraction:g}")

    def tuned(self, task: TaskData, splits: EvalSplits, bb: Backbone, pixels: torch.Tensor, model: str,
              exam_level: bool, common: dict) -> None:
        test = units_of(task, splits.test, exam_level)
        score = proba_scorer(task.kind, task.n_classes)
        for fraction in self.cfg.fractions:
            for seed in range(self.cfg.seeds):
                backbone = bb.model if bb.model is not None else random_backbone(bb.spec, seed).model
                fit = label_fraction(task, splits.fit, fraction, seed)
                p = finetune(backbone, bb.spec.embed_dim, pixels, task, fit, splits.select, splits.test,
                             self.cfg.finetune, score, seed=seed, exam_level=exam_level,
                             exam_aggregation=self.cfg.exam_aggregation)
                self.score(task, test, p, model=model, protocol="finetune", fraction=fraction, seed=seed,
                           n_fit=int(len(units_of(task, fit, exam_level).labels)), **common)
                self.tick(f"{task.task}: {model} finetune {fraction:g}")

    def tick(self, label: str) -> None:
        self.done += 1
        self.on_progress(self.done, self.total, label)

    def plan(self, n_tasks: int, n_checkpoints: int) -> int:
        frozen = sum(p in FROZEN for p in self.cfg.protocols)
        per_fraction = [1 if f >= 1 else self.cfg.seeds for f in self.cfg.fractions]
        n = n_checkpoints * frozen * sum(per_fraction)
        if "random" in self.cfg.baselines:
            n += frozen * self.cfg.seeds * len(self.cfg.fractions)
        if "pixels" in self.cfg.baselines:
            n += frozen * sum(per_fraction)
        if "finetune" in self.cfg.protocols:
            n += (n_checkpoints + ("supervised" in self.cfg.baselines)) * self.cfg.seeds * len(self.cfg.fractions)
        return n * n_tasks

    def run_task(self, task: TaskData, splits: EvalSplits, main: Backbone, others: list[Backbone]) -> dict:
        name = task.task
        exam_level = bool(task.spec and task.spec.level == "exam")
        parts = task_body_parts(task)
        domain = domain_text(parts, task.modalities)
        t0 = time.time()
        checkpoints = [main, *others]
        frozen_seeds = lambda f: [0] if f >= 1 else list(range(self.cfg.seeds))  # noqa: E731
        for bb in checkpoints:
            common = dict(checkpoint=bb.path, checkpoint_sha256=bb.sha256, architecture=bb.spec.name,
                          pretrained_on=domain_text(bb.pretrained_on.get("body_part", []),
                                                    bb.pretrained_on.get("modality", [])) if bb.pretrained_on else None,
                          transfer=transfer_kind(bb.pretrained_on, parts, task.modalities))
            if any(p in FROZEN for p in self.cfg.protocols):
                x = self.features(bb, task)
                self.frozen(task, splits, x, bb.name, frozen_seeds, exam_level, common)
                if bb is main:
                    self.retrieval = self.retrieval or self.retrieve(task, splits, x)
            if "finetune" in self.cfg.protocols and not splits.folds:
                pixels = load_pixels(self.ws, task.image_ids, bb.spec.img_size, bb.spec.mean[0], bb.spec.std[0],
                                     images=self.images)
                self.tuned(task, splits, bb, pixels, bb.name, exam_level, common)
        base = dict(checkpoint=None, checkpoint_sha256=None, architecture=main.spec.name, pretrained_on=None,
                    transfer="none")
        if "random" in self.cfg.baselines and any(p in FROZEN for p in self.cfg.protocols):
            for seed in range(self.cfg.seeds):
                x = self.features(random_backbone(main.spec, seed), task)
                self.frozen(task, splits, x, "random", lambda f, s=seed: [s], exam_level, base)
        if "pixels" in self.cfg.baselines and any(p in FROZEN for p in self.cfg.protocols):
            px = pixel_features(self.ws, task.image_ids, 64, images=self.images)
            _, (x,) = pca_fit_transform(px[splits.fit], [px], 128)  # fitted on the training images only
            self.frozen(task, splits, x, "pixels", frozen_seeds, exam_level,
                        {**base, "architecture": "pixels-pca128"})
        if "supervised" in self.cfg.baselines and "finetune" in self.cfg.protocols and not splits.folds:
            sup = Backbone("supervised", None, main.spec, None, None, {})
            pixels = load_pixels(self.ws, task.image_ids, main.spec.img_size, main.spec.mean[0], main.spec.std[0],
                                 images=self.images)
            self.tuned(task, splits, sup, pixels, "supervised", exam_level, base)
        parts = []
        for fit_rows, test_rows in splits.folds or [(splits.fit, splits.test)]:
            fit, test = units_of(task, fit_rows, exam_level), units_of(task, test_rows, exam_level)
            parts.append((majority_predict(fit.labels, len(test.labels), task.n_classes), test, len(fit.labels)))
        maj, test, n_fit = _pool(parts)
        self.score(task, test, maj, model="majority", protocol="majority", fraction=1.0, seed=0,
                   n_fit=n_fit, **{**base, "architecture": None})
        notes = []
        if splits.folds:
            notes.append(f"too few patients for train/val/test parts: leave-one-patient-out cross-validation "
                         f"({len(splits.folds)} folds), hyper-parameters chosen inside each fold"
                         + ("; fine-tuning skipped" if "finetune" in self.cfg.protocols else "")
                         + ("; pooled leave-one-out AUROC/AUPRC are biased low for predictors that follow the "
                            "training prevalence (the majority class scores 0 by construction): read accuracy "
                            "and the CIs" if task.kind == "binary" else ""))
        return {"task": name, "kind": task.kind, "notes": notes, "classes": list(task.classes), "level": "exam" if exam_level
                else "image", "domain": domain, "description": task.spec.description if task.spec else "",
                "splits": splits.describe(task), "primary_metric": primary_metric(task.kind),
                "test_units": int(len(test.labels)), "test_classes": np.bincount(
                    test.labels, minlength=task.n_classes).tolist(),
                "seconds": round(time.time() - t0, 1)}

    def retrieve(self, task: TaskData, splits: EvalSplits, x: np.ndarray) -> list[dict]:
        """A few test images (one per class first) and their five nearest training images, by cosine."""
        if self.cfg.retrieval_queries <= 0:
            return []
        norm = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        queries: list[int] = []
        for c in range(task.n_classes):
            rows = splits.test[task.labels[splits.test] == c]
            if len(rows):
                queries.append(int(rows[0]))
        queries += [int(i) for i in splits.test if int(i) not in queries]
        out = []
        for q in queries[: self.cfg.retrieval_queries]:
            pool = splits.fit[task.patients[splits.fit] != task.patients[q]]  # never the query's own patient
            sim = norm[pool] @ norm[q]
            top = pool[np.argsort(-sim, kind="stable")[:5]]
            out.append({"query": task.image_ids[q], "label": task.classes[task.labels[q]],
                        "neighbours": [{"image_id": task.image_ids[i], "label": task.classes[task.labels[i]],
                                        "similarity": float(norm[i] @ norm[q])} for i in top]})
        return out


def _pool(parts: list[tuple[Predictions, Units, int]]) -> tuple[Predictions, Units, int]:
    """The held-out predictions of every fold as one prediction set (one fold: itself)."""
    if len(parts) == 1:
        return parts[0]
    preds, units, n_fit = zip(*parts)
    pooled = Predictions(np.concatenate([p.pred for p in preds]), np.concatenate([p.proba for p in preds]),
                         {"folds": len(parts), **{k: v for k, v in preds[0].chosen.items() if k in ("k", "temperature")},
                          "C per fold": [p.chosen.get("C") for p in preds] if "C" in preds[0].chosen else None})
    pooled.chosen = {k: v for k, v in pooled.chosen.items() if v is not None}
    merged = Units([r for u in units for r in u.rows], np.concatenate([u.labels for u in units]),
                   np.concatenate([u.patients for u in units]))
    return pooled, merged, int(np.mean(n_fit))


def new_eval_id() -> str:
    return "eval-" + dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")


def run_evaluation(ws: Workspace, checkpoint: str | os.PathLike, tasks: list[str], cfg: EvalConfig | None = None,
                   eval_id: str | None = None, model_name: str | None = None, on_progress=None,
                   shards: str | os.PathLike | None = None) -> Path:
    """Evaluate, write evals/<eval_id>/metrics.json and the catalog rows; returns the eval folder.

    Images, labels, patients and splits come from the catalog and the store, or, with `shards`, from
    a shard set's manifest (its samples carry the same metadata)."""
    cfg = cfg or EvalConfig()
    if not tasks:
        raise EvaluationError("no task to evaluate: give --task (see `ortho tasks list`)")
    eval_id = eval_id or new_eval_id()
    source = ShardImages(shards) if shards else None
    loaded = []
    for name in dict.fromkeys(tasks):  # every task checked before any work starts
        task = source.task(name) if source else load_task(ws, name)
        if not task.image_ids:
            where = f"shard set {Path(shards).parent.name}" if shards else "this catalog (see `ortho tasks list`)"
            raise EvaluationError(f"task {name} has no labelled images in {where}")
        loaded.append((task, eval_splits(task)))
    main = load_checkpoint(checkpoint, model_name)
    others = []
    for text in cfg.baselines:
        name, path, arch = parse_baseline(text)
        if path:
            others.append(load_checkpoint(path, arch, main.spec.img_size if arch else None, name=name))
    ev = Evaluation(ws, cfg, eval_id, on_progress)
    ev.images = source
    ev.done, ev.total, ev.retrieval = 0, ev.plan(len(loaded), 1 + len(others)), []
    t0 = time.time()
    task_info = [ev.run_task(task, splits, main, others) for task, splits in loaded]
    out = ws.evals_dir / eval_id
    out.mkdir(parents=True, exist_ok=True)
    doc = {"eval_id": eval_id, "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "checkpoint": {"path": main.path, "sha256": main.sha256, "architecture": main.spec.name,
                          "img_size": main.spec.img_size, "pretrained_on": main.pretrained_on},
           "data": {"shards": str(Path(shards).absolute()) if shards else None},
           "baselines": cfg.baselines, "config": _config_dict(cfg), "tasks": task_info,
           "results": ev.results, "retrieval": ev.retrieval, "seconds": round(time.time() - t0, 1)}
    tmp = out / ".metrics.json.tmp"
    tmp.write_text(json.dumps(doc, indent=1, default=_json_default))
    tmp.replace(out / "metrics.json")
    record_results(ws, doc)
    return out


def _config_dict(cfg: EvalConfig) -> dict:
    d = asdict(cfg)
    d["finetune"] = cfg.finetune.to_dict()
    return d


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o).__name__)


def record_results(ws: Workspace, doc: dict) -> Path:
    """One `evals` row per result, written in one atomic file per evaluation."""
    now = dt.datetime.now(dt.timezone.utc)
    domains = {t["task"]: t["domain"] for t in doc["tasks"]}
    rows = []
    for r in doc["results"]:
        row = {k: r.get(k) for k in ("task", "model", "protocol", "fraction", "seed", "checkpoint",
                                      "checkpoint_sha256", "architecture", "pretrained_on", "transfer",
                                      "n_fit", "n_test", "test_patients")}
        row.update(eval_id=doc["eval_id"], task_domain=domains.get(r["task"]), recorded_at=now,
                   chosen=json.dumps(r.get("chosen"), default=_json_default))
        for m in schema.EVAL_METRICS:
            point, lo, hi = r["metrics"].get(m, (None, None, None))
            row[m], row[f"{m}_lo"], row[f"{m}_hi"] = (None if v is None or not np.isfinite(v) else float(v)
                                                      for v in (point, lo, hi))
        rows.append(row)
    path = ws.evals_catalog_dir / f"{doc['eval_id']}.parquet"
    write_table(path, rows, schema.EVAL, ws.staging_dir)
    return path
