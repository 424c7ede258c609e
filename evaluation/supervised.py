"""The supervised baseline that a pretrained model is measured against: a standard CNN from timm (one input
channel, random init, nothing downloaded) trained on the task's labels under a stated budget.

Images are preprocessed once at the CNN's own size, augmented on the fly (random resized crop with a mild
scale, a small rotation, a gain/offset jitter; a mirror only when asked), trained with AdamW, a warm-up and a
cosine schedule and plain or class-balanced cross-entropy (or, with head=grade, a squared error on the grade of an
ordinal task), and stopped early on the `select` split: the epoch
kept is the best there, and training stops after `patience` epochs without a better one. The budget (model,
parameters, image size, epochs allowed and run, wall time, threads) travels with every result.

    p = train_supervised(pixels, data, fit, select, test, SupervisedConfig(), proba_scorer("ordinal", 5))
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from evaluation.config import EvalConfig, SupervisedConfig
from evaluation.data import EvaluationError, TaskData
from evaluation.finetune import fit_select, predict_units, training_budget
from evaluation.protocols import Predictions
from training.backbone import param_groups


def build_cnn(name: str, n_classes: int, seed: int = 0) -> tuple[nn.Module, float, float]:
    """(model, input mean, input std): a timm CNN at random init for one grey channel; the normalisation is
    the model's own (its RGB statistics averaged to one channel), as the backbones read theirs."""
    import timm

    if name not in timm.list_models():
        raise EvaluationError(f"unknown supervised model {name!r}: not a timm model (e.g. resnet18, resnet10t)")
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False, in_chans=1, num_classes=n_classes)
    cfg = model.pretrained_cfg
    mean, std = cfg.get("mean", (0.5,)), cfg.get("std", (0.5,))
    return model, float(np.mean(mean)), float(np.mean(std))


class GradeRegressor(nn.Module):
    """An ordinal task as one regressed grade s (the class index), trained with a squared error; its class
    scores are -(s - c)^2 / temperature, so their softmax peaks at the nearest grade (and, for two classes,
    is monotonic in s: a score for AUROC)."""

    def __init__(self, cnn: nn.Module, n_classes: int, temperature: float = 0.5):
        super().__init__()
        self.cnn, self.temperature = cnn, temperature
        self.register_buffer("grades", torch.arange(n_classes, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -(self.cnn(x)[:, :1] - self.grades) ** 2 / self.temperature

    def loss(self, scores: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        """Mean (class-weighted) squared error of the grade: (s - y)^2 = -temperature * score of y."""
        sq = -self.temperature * scores.gather(1, y[:, None])[:, 0]
        w = weight[y] if weight is not None else torch.ones_like(sq)
        return (w * sq).sum() / w.sum().clamp(min=1e-12)


def input_normalisation(name: str) -> tuple[float, float]:
    """The (mean, std) build_cnn's model expects, without building it twice per seed."""
    _, mean, std = build_cnn(name, 2)
    return mean, std


def train_supervised(pixels: torch.Tensor, data: TaskData, fit: np.ndarray, select: np.ndarray, test: np.ndarray,
                     cfg: SupervisedConfig, select_score, seed: int = 0, exam_level: bool = False,
                     exam_aggregation: str = EvalConfig.exam_aggregation) -> Predictions:
    """Train a CNN from random init on `fit`, early-stopped on `select`; predict `test`.

    pixels: [N, 1, S, S] preprocessed at cfg.img_size with input_normalisation(cfg.model), row i for data row i.
    Returns test predictions (per exam for exam-level tasks) whose `chosen` holds the epoch kept, its select
    score, the training curve and the budget."""
    t0 = time.perf_counter()
    regress = cfg.head == "grade" and data.kind in ("ordinal", "binary")
    model, _, _ = build_cnn(cfg.model, 1 if regress else data.n_classes, seed)
    model = GradeRegressor(model, data.n_classes) if regress else model
    optimizer = torch.optim.AdamW(param_groups(model, 0, 1.0), lr=cfg.lr, weight_decay=cfg.weight_decay)
    g = torch.Generator().manual_seed(seed)
    info = fit_select(model, optimizer, pixels, data, fit, select, cfg, select_score, g, exam_level, exam_aggregation,
                      loss_fn=model.loss if regress else None)
    _, proba = predict_units(model, pixels, data, test, 2 * cfg.batch_size, exam_level, exam_aggregation)
    return Predictions(proba.argmax(1), proba, {**info, "lr": cfg.lr, "head": "grade" if regress else "classes",
                                                "budget": training_budget(cfg.model, model, pixels, cfg, info, t0)})
