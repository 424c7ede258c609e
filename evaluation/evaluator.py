"""The work of one evaluation, task by task: every model (the checkpoint, checkpoint baselines, random init,
supervised (a CNN, and the same ViT, from random init), pixels, majority) under every protocol, label fraction
and seed, each scored on the task's untouched test part with patient-level bootstrap CIs."""

from __future__ import annotations

import time

import numpy as np
import torch

from catalog.workspace import Workspace
from evaluation.backbones import Backbone, random_backbone
from evaluation.config import FROZEN, EvalConfig
from evaluation.data import EvalSplits, TaskData, label_fraction
from evaluation.domain import domain_text, pretrained_on_text, task_body_parts, transfer_kind
from evaluation.embed import embed_images, pixel_features
from evaluation.finetune import finetune, load_pixels
from evaluation.metrics import bootstrap_ci, confusion, metric_set, primary_metric, proba_scorer
from evaluation.protocols import Predictions, knn_predict, knn_select, linear_probe, majority_predict, pca_fit_transform
from evaluation.retrieval import nearest_training_images
from evaluation.supervised import input_normalisation, train_supervised
from evaluation.units import Units, pool_folds, unit_features, units_of

# The catalog columns of a built-in baseline's results (no checkpoint behind it).
NO_CHECKPOINT = dict(checkpoint=None, checkpoint_sha256=None, pretrained_on=None, transfer="none")


class Evaluation:
    def __init__(self, ws: Workspace, cfg: EvalConfig, eval_id: str, on_progress=None, images=None):
        self.ws, self.cfg, self.eval_id = ws, cfg, eval_id
        self.images = images  # None: the store; or a ShardImages when evaluating from a shard set
        self.results: list[dict] = []
        self.retrieval: list[dict] = []
        self.done, self.total = 0, 0
        self.on_progress = on_progress or (lambda *a: None)

    def score(self, task: TaskData, units: Units, p: Predictions, **fields) -> dict:
        names = metric_set(task.kind)
        ci = bootstrap_ci(units.labels, p.pred, p.proba, units.patients, names, task.n_classes,
                          n_boot=self.cfg.n_boot, seed=fields.get("seed", 0))
        result = {"task": task.task, **fields, "n_test": int(len(units.labels)),
                  "test_patients": int(len(set(units.patients))), "metrics": ci,
                  "confusion": confusion(units.labels, p.pred, task.n_classes).tolist(),
                  "chosen": {k: v for k, v in p.chosen.items() if k not in ("history", "budget")},
                  "history": p.chosen.get("history")}
        if p.chosen.get("budget"):
            result["budget"] = p.chosen["budget"]
        self.results.append(result)
        return result

    def features(self, bb: Backbone, task: TaskData, model: str | None = None) -> np.ndarray:
        cache = bb.sha256[:16] if bb.sha256 else None
        what = f"{task.task}: embedding with {model or bb.name}"
        self.stage(what)
        cls, mean = embed_images(self.ws, bb.model, task.image_ids, bb.spec.img_size, bb.spec.mean[0],
                                 bb.spec.std[0], cache_key=cache, batch_size=self.cfg.batch_size,
                                 images=self.images, on_progress=lambda d, n: self.stage(f"{what}, {d}/{n} images"))
        return {"cls": cls, "mean": mean, "both": np.concatenate([cls, mean], 1)}[self.cfg.pool]

    def pixels(self, bb: Backbone, task: TaskData) -> torch.Tensor:
        return load_pixels(self.ws, task.image_ids, bb.spec.img_size, bb.spec.mean[0], bb.spec.std[0],
                           images=self.images)

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

    def frozen_seeds(self, fraction: float) -> list[int]:
        """All labels: one seed (nothing is drawn); a fraction: a label subset per seed."""
        return [0] if fraction >= 1 else list(range(self.cfg.seeds))

    def frozen(self, task: TaskData, splits: EvalSplits, x: np.ndarray, model: str, seeds_for,
               exam_level: bool, common: dict) -> None:
        """kNN and linear probes on frozen features x [N, D], at every label fraction and its seeds;
        with cross-validation folds, the held-out predictions of every fold pooled."""
        folds = splits.folds or [(splits.fit, splits.test)]
        for fraction in self.cfg.fractions:
            for seed in seeds_for(fraction):
                for protocol in (p for p in self.cfg.protocols if p in FROZEN):
                    self.stage(f"{task.task}: {model} {protocol} {fraction:g} seed {seed}")
                    parts = [self.probe(protocol, task, x, label_fraction(task, fit, fraction, seed),
                                        splits.select, test, exam_level, seed) for fit, test in folds]
                    p, test, n_fit = pool_folds(parts)
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
                self.stage(f"{task.task}: {model} fine-tuning {fraction:g} seed {seed}")
                p = finetune(backbone, bb.spec.embed_dim, pixels, task, fit, splits.select, splits.test,
                             self.cfg.finetune, score, seed=seed, exam_level=exam_level,
                             exam_aggregation=self.cfg.exam_aggregation, arch=bb.spec.name)
                self.score(task, test, p, model=model, protocol="finetune", fraction=fraction, seed=seed,
                           n_fit=int(len(units_of(task, fit, exam_level).labels)), **common)
                self.tick(f"{task.task}: {model} finetune {fraction:g}")

    def tick(self, label: str) -> None:
        self.done += 1
        self.on_progress(self.done, self.total, label)

    def stage(self, label: str) -> None:
        """What runs now (embedding, a probe, a fine-tuning, a baseline), before its result is counted."""
        self.on_progress(self.done, self.total, label)

    def plan(self, n_tasks: int, n_checkpoints: int) -> int:
        """How many results the evaluation will score (the progress bar's total; majority not counted)."""
        frozen = sum(p in FROZEN for p in self.cfg.protocols)
        per_fraction = [1 if f >= 1 else self.cfg.seeds for f in self.cfg.fractions]
        n = n_checkpoints * frozen * sum(per_fraction)
        if "random" in self.cfg.baselines:
            n += frozen * self.cfg.seeds * len(self.cfg.fractions)
        if "pixels" in self.cfg.baselines:
            n += frozen * sum(per_fraction)
        supervised = "supervised" in self.cfg.baselines
        if "finetune" in self.cfg.protocols:
            n += (n_checkpoints + (supervised and self.cfg.supervised.vit)) * self.cfg.seeds * len(self.cfg.fractions)
        if supervised:
            n += self.cfg.seeds * len(self.cfg.fractions)
        return n * n_tasks

    def run_task(self, task: TaskData, splits: EvalSplits, main: Backbone, others: list[Backbone]) -> dict:
        """Every model on one task; returns the task's summary for metrics.json."""
        exam_level = bool(task.spec and task.spec.level == "exam")
        parts = task_body_parts(task)
        t0 = time.time()
        for bb in [main, *others]:
            self.checkpoint(task, splits, bb, exam_level, parts, is_main=bb is main)
        base = {**NO_CHECKPOINT, "architecture": main.spec.name}
        self.builtin_baselines(task, splits, main, exam_level, base)
        test = self.majority(task, splits, exam_level, base)
        return task_summary(task, splits, test, exam_level, "finetune" in self.cfg.protocols,
                            domain_text(parts, task.modalities), time.time() - t0,
                            "supervised" in self.cfg.baselines)

    def checkpoint(self, task: TaskData, splits: EvalSplits, bb: Backbone, exam_level: bool, task_parts: set[str],
                   is_main: bool) -> None:
        """A checkpoint's frozen probes and fine-tuning (the checkpoint under evaluation: also retrieval)."""
        common = dict(checkpoint=bb.path, checkpoint_sha256=bb.sha256, architecture=bb.spec.name,
                      pretrained_on=pretrained_on_text(bb.pretrained_on),
                      transfer=transfer_kind(bb.pretrained_on, task_parts, task.modalities))
        if any(p in FROZEN for p in self.cfg.protocols):
            x = self.features(bb, task)
            self.frozen(task, splits, x, bb.name, self.frozen_seeds, exam_level, common)
            if is_main:
                self.retrieval = self.retrieval or nearest_training_images(task, splits, x,
                                                                           self.cfg.retrieval_queries)
        if "finetune" in self.cfg.protocols and not splits.folds:
            self.tuned(task, splits, bb, self.pixels(bb, task), bb.name, exam_level, common)

    def builtin_baselines(self, task: TaskData, splits: EvalSplits, main: Backbone, exam_level: bool,
                          base: dict) -> None:
        """random init (one per seed) and raw pixels, frozen; supervised: a CNN trained from random init
        (its own budget) and, when fine-tuning runs, the checkpoint's architecture fine-tuned from random init."""
        frozen = any(p in FROZEN for p in self.cfg.protocols)
        if "random" in self.cfg.baselines and frozen:
            for seed in range(self.cfg.seeds):
                x = self.features(random_backbone(main.spec, seed), task, f"the random-init baseline (seed {seed})")
                self.frozen(task, splits, x, "random", lambda f, s=seed: [s], exam_level, base)
        if "pixels" in self.cfg.baselines and frozen:
            self.raw_pixels(task, splits, exam_level, base)
        if "supervised" in self.cfg.baselines and not splits.folds:
            self.supervised(task, splits, exam_level, base)
            if "finetune" in self.cfg.protocols and self.cfg.supervised.vit:
                sup = Backbone("supervised", None, main.spec, None, None, {})
                self.tuned(task, splits, sup, self.pixels(main, task), "supervised", exam_level, base)

    def raw_pixels(self, task: TaskData, splits: EvalSplits, exam_level: bool, base: dict) -> None:
        """The frozen probes on raw pixels: PCA-128 of 64 px images, fitted on the training images only."""
        self.stage(f"{task.task}: raw-pixel baseline, reading {len(task.image_ids)} images")
        px = pixel_features(self.ws, task.image_ids, images=self.images)
        _, (x,) = pca_fit_transform(px[splits.fit], [px], 128)
        self.frozen(task, splits, x, "pixels", self.frozen_seeds, exam_level, {**base, "architecture": "pixels-pca128"})

    def supervised(self, task: TaskData, splits: EvalSplits, exam_level: bool, base: dict) -> None:
        """The supervised CNN (protocol `train`) at every label fraction and seed, early-stopped on select."""
        cfg = self.cfg.supervised
        pixels = load_pixels(self.ws, task.image_ids, cfg.img_size, *input_normalisation(cfg.model),
                             images=self.images)
        test, score = units_of(task, splits.test, exam_level), proba_scorer(task.kind, task.n_classes)
        for fraction in self.cfg.fractions:
            for seed in range(self.cfg.seeds):
                fit = label_fraction(task, splits.fit, fraction, seed)
                self.stage(f"{task.task}: supervised baseline ({cfg.model}) {fraction:g} seed {seed}")
                p = train_supervised(pixels, task, fit, splits.select, splits.test, cfg, score, seed, exam_level,
                                     self.cfg.exam_aggregation)
                self.score(task, test, p, model="supervised", protocol="train", fraction=fraction, seed=seed,
                           n_fit=len(units_of(task, fit, exam_level).labels), **{**base, "architecture": cfg.model})
                self.tick(f"{task.task}: supervised {cfg.model} {fraction:g}")

    def majority(self, task: TaskData, splits: EvalSplits, exam_level: bool, base: dict) -> Units:
        """The most frequent training class, scored like the others; returns the test units."""
        parts = []
        for fit_rows, test_rows in splits.folds or [(splits.fit, splits.test)]:
            fit, test = units_of(task, fit_rows, exam_level), units_of(task, test_rows, exam_level)
            parts.append((majority_predict(fit.labels, len(test.labels), task.n_classes), test, len(fit.labels)))
        maj, test, n_fit = pool_folds(parts)
        self.score(task, test, maj, model="majority", protocol="majority", fraction=1.0, seed=0,
                   n_fit=n_fit, **{**base, "architecture": None})
        return test


def task_summary(task: TaskData, splits: EvalSplits, test: Units, exam_level: bool, finetune_asked: bool,
                 domain: str, seconds: float, supervised_asked: bool = False) -> dict:
    """What metrics.json says about a task besides its results."""
    notes = []
    if splits.folds:
        skipped = [what for what, asked in (("fine-tuning", finetune_asked), ("the supervised baseline",
                                                                               supervised_asked)) if asked]
        notes.append(f"no train/val/test parts: {splits.cv} cross-validation ({len(splits.folds)} folds), "
                     "hyper-parameters chosen inside each fold"
                     + (f"; {' and '.join(skipped)} skipped" if skipped else "")
                     + ("; pooled leave-one-out AUROC/AUPRC are biased low for predictors that follow the "
                        "training prevalence (the majority class scores 0 by construction): read accuracy "
                        "and the CIs" if task.kind == "binary" and splits.cv == "leave-one-patient-out" else ""))
    described = splits.describe(task)
    smoke = [] if splits.folds else smoke_notes(described)
    return {"task": task.task, "kind": task.kind, "notes": notes + smoke, "smoke": bool(smoke),
            "classes": list(task.classes),
            "level": "exam" if exam_level else "image", "domain": domain,
            "description": task.spec.description if task.spec else "", "splits": described,
            "primary_metric": primary_metric(task.kind), "test_units": int(len(test.labels)),
            "test_classes": np.bincount(test.labels, minlength=task.n_classes).tolist(),
            "seconds": round(seconds, 1)}


SMOKE_PATIENTS = 20  # below this many patients in a part, a CI says little and a headline sentence cannot rest on it


def smoke_notes(described: dict) -> list[str]:
    """Warnings for a test or selection part too small to measure anything: these results are a smoke run."""
    notes = []
    for part, name in (("test", "test"), ("select", "selection")):
        d = described[part]
        if not d["images"]:
            continue
        if d["patients"] < SMOKE_PATIENTS:
            notes.append(f"smoke run: the {name} part holds {d['patients']} patients ({d['images']} images), fewer "
                         f"than {SMOKE_PATIENTS}; its metrics show the pipeline runs, they measure nothing")
        if sum(c > 0 for c in d["classes"]) < 2:
            notes.append(f"smoke run: the {name} part holds a single class; AUROC and balanced metrics are "
                         "undefined or meaningless there")
    return notes

