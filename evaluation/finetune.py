"""Fine-tuning protocol: a backbone plus a linear classifier, trained end to end (or its last blocks)
for a few epochs with layer-wise lr decay; the epoch kept is the best on the `select` split.

The same function trains the ViT half of the "supervised" baseline: the same architecture from random
init, with the same budget (epochs, batch size, schedule); the CNN half (supervised.py) shares the training
loop below. Images are preprocessed once (as for embedding) and augmented on the fly with a mild random
resized crop, an optional small rotation and mirror, and an intensity jitter (by default no flips:
laterality matters for some tasks). Exam-level tasks train on slices carrying the exam's label and are scored
per exam on the mean of its slices' probabilities.
"""

from __future__ import annotations

import copy
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from catalog.store import ImageStore
from catalog.workspace import Workspace
from evaluation.config import EvalConfig, FinetuneConfig
from evaluation.data import EvaluationError, TaskData, aggregate, exam_groups
from evaluation.embed import preprocess
from evaluation.protocols import Predictions
from training.backbone import apply_schedules, backbone_depth, forward_tokens, is_vit, param_groups


class Classifier(nn.Module):
    """backbone -> [CLS, mean of patch tokens] -> linear layer."""

    def __init__(self, backbone: nn.Module, embed_dim: int, n_classes: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(2 * embed_dim, n_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.01)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cls, patches = forward_tokens(self.backbone, x)
        return self.head(torch.cat([cls, patches.mean(1)], dim=1))


def _freeze_to_last_blocks(model: Classifier, blocks: int) -> None:
    if blocks < 0:
        return
    if not is_vit(model.backbone):
        raise EvaluationError("finetune.blocks counts a ViT's blocks; a CNN fine-tunes whole (finetune.blocks=-1)")
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    depth = len(model.backbone.blocks)
    for block in list(model.backbone.blocks)[depth - blocks:] if blocks else []:
        for p in block.parameters():
            p.requires_grad_(True)
    for p in model.backbone.norm.parameters():
        p.requires_grad_(True)


def _augment(x: torch.Tensor, g: torch.Generator, cfg) -> torch.Tensor:
    """A random resized crop (area in crop_scale, aspect 3/4..4/3) back to full size, rotated by up to
    cfg.rotation degrees and mirrored with probability 1/2 when cfg.hflip, then a random gain/offset on the
    normalised intensities. One affine resampling per image (bilinear; borders reflected)."""
    b = x.shape[0]
    area = torch.empty(b).uniform_(*cfg.crop_scale, generator=g)
    ratio = torch.empty(b).uniform_(math.log(3 / 4), math.log(4 / 3), generator=g).exp()
    sw, sh = (area * ratio).sqrt().clamp(max=1.0), (area / ratio).sqrt().clamp(max=1.0)
    cx, cy = (torch.rand(b, generator=g) * 2 - 1) * (1 - sw), (torch.rand(b, generator=g) * 2 - 1) * (1 - sh)
    angle = (torch.rand(b, generator=g) * 2 - 1) * math.radians(cfg.rotation)
    mirror = torch.where(torch.rand(b, generator=g) < 0.5, -1.0, 1.0) if cfg.hflip else torch.ones(b)
    cos, sin = angle.cos(), angle.sin()
    theta = torch.stack([torch.stack([cos * sw * mirror, -sin * sh, cx], 1),
                         torch.stack([sin * sw * mirror, cos * sh, cy], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    j = cfg.intensity_jitter
    gain = 1 + (torch.rand(b, 1, 1, 1, generator=g) * 2 - 1) * j
    offset = (torch.rand(b, 1, 1, 1, generator=g) * 2 - 1) * j
    return out * gain + offset


def load_pixels(ws: Workspace, image_ids: list[str], size: int, mean: float, std: float,
                images=None) -> torch.Tensor:
    """[N, 1, size, size] preprocessed images, held as float16 (half the memory; batches are cast back)."""
    store = images or ImageStore(ws.store_dir)
    out = torch.empty(len(image_ids), 1, size, size, dtype=torch.float16)
    for k, i in enumerate(image_ids):
        out[k] = preprocess(store.get(i), size, mean, std).half()
    return out


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor, batch_size: int, n_classes: int) -> np.ndarray:
    model.eval()
    out = [F.softmax(model(x[s:s + batch_size].float()).float(), dim=1) for s in range(0, len(x), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, n_classes))


def predict_units(model: nn.Module, pixels: torch.Tensor, data: TaskData, idx: np.ndarray, batch_size: int,
                  exam_level: bool = False,
                  exam_aggregation: str = EvalConfig.exam_aggregation) -> tuple[np.ndarray, np.ndarray]:
    """(labels, probabilities) of the images of `idx`, or of their exams for exam-level tasks."""
    proba = _predict(model, pixels[idx], batch_size, data.n_classes)
    return _unit_scores(data, idx, proba, exam_level, exam_aggregation)


def finetune(backbone: nn.Module, embed_dim: int, pixels: torch.Tensor, data: TaskData, fit: np.ndarray,
             select: np.ndarray, test: np.ndarray, cfg: FinetuneConfig, select_score, seed: int = 0,
             exam_level: bool = False, exam_aggregation: str = EvalConfig.exam_aggregation, on_progress=None,
             arch: str | None = None) -> Predictions:
    """Train on `fit`, keep the epoch that scores best on `select`, predict `test`.

    pixels: [N, 1, S, S] preprocessed images, row i for data row i. select_score(y, proba) -> float.
    Returns test predictions per image, or per exam for exam-level tasks (rows of exam_groups(test)); their
    `chosen` holds the epoch kept, the curve and the budget (`arch` names the model there).
    """
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = Classifier(copy.deepcopy(backbone), embed_dim, data.n_classes)
    _freeze_to_last_blocks(model, cfg.blocks)
    groups = param_groups(model, backbone_depth(model.backbone), cfg.layer_decay)
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    info = fit_select(model, optimizer, pixels, data, fit, select, cfg, select_score, g, exam_level,
                      exam_aggregation, on_progress)
    _, proba = predict_units(model, pixels, data, test, 2 * cfg.batch_size, exam_level, exam_aggregation)
    return Predictions(proba.argmax(1), proba, {**info, "lr": cfg.lr, "layer_decay": cfg.layer_decay,
                                                "blocks": cfg.blocks,
                                                "budget": training_budget(arch, model, pixels, cfg, info, t0)})


def training_budget(arch: str | None, model: nn.Module, pixels: torch.Tensor, cfg, info: dict, t0: float) -> dict:
    """What one training run was allowed and used: model, parameters, image size, epochs, steps, wall time."""
    return {"model": arch, "params": sum(p.numel() for p in model.parameters()), "img_size": int(pixels.shape[-1]),
            "epochs": info["epochs"], "min_steps": cfg.min_steps, "epochs_run": info["epochs_run"],
            "patience": cfg.patience,
            "batch_size": cfg.batch_size, "steps": info["steps"], "seconds": round(time.perf_counter() - t0, 1),
            "threads": torch.get_num_threads()}


def fit_select(model: nn.Module, optimizer: torch.optim.Optimizer, pixels: torch.Tensor, data: TaskData,
               fit: np.ndarray, select: np.ndarray, cfg, select_score, g: torch.Generator, exam_level: bool = False,
               exam_aggregation: str = EvalConfig.exam_aggregation, on_progress=None, loss_fn=None) -> dict:
    """Train `model` on `fit` for up to cfg.epochs (warm-up, then cosine over the whole budget), score `select`
    after each epoch and stop once cfg.patience epochs (0: never) bring no better score; the model is left at
    its best epoch. The epochs are raised until they make cfg.min_steps steps (a small label fraction's
    epochs are short), and early stopping waits for those steps. cfg: a FinetuneConfig or anything with its
    training fields (a SupervisedConfig).
    loss_fn(outputs, labels, class_weights) -> loss; default cross-entropy with cfg.label_smoothing.
    Returns {"epoch", "select_score", "epochs", "epochs_run", "history", "steps"}."""
    steps_per_epoch = max(1, math.ceil(len(fit) / cfg.batch_size))
    epochs = max(cfg.epochs, math.ceil(cfg.min_steps / steps_per_epoch))
    total = epochs * steps_per_epoch
    warmup = max(1, int(cfg.warmup_fraction * total))
    labels = torch.from_numpy(data.labels)
    weight = _class_weights(data, fit) if cfg.balanced else None
    best_score, best_epoch, best_state, history, step = -np.inf, 0, None, [], 0
    for epoch in range(1, epochs + 1):
        loss, step = _train_epoch(model, optimizer, pixels, labels, weight, fit, g, cfg,
                                  lambda s: _warmup_cosine_lr(s, cfg.lr, warmup, total), step, loss_fn)
        score = float(select_score(*predict_units(model, pixels, data, select, 2 * cfg.batch_size, exam_level,
                                                  exam_aggregation)))
        history.append({"epoch": epoch, "train_loss": loss, "select_score": score})
        if score > best_score or best_state is None:
            best_score, best_epoch = score, epoch
            best_state = copy.deepcopy(model.state_dict())
        if on_progress:
            on_progress(epoch, epochs)
        if cfg.patience and epoch - best_epoch >= cfg.patience and step >= cfg.min_steps:
            break
    model.load_state_dict(best_state)
    return {"epoch": best_epoch, "select_score": best_score, "epochs": epochs, "epochs_run": len(history),
            "history": history, "steps": step}


def _class_weights(data: TaskData, fit: np.ndarray) -> torch.Tensor:
    """Inverse class frequencies over `fit` (0 for a class absent from it)."""
    counts = np.bincount(data.labels[fit], minlength=data.n_classes).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / (data.n_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(w, dtype=torch.float32)


def _unit_scores(data: TaskData, idx: np.ndarray, proba: np.ndarray, exam_level: bool,
                 exam_aggregation: str) -> tuple[np.ndarray, np.ndarray]:
    """(labels, probabilities) per image of `idx`, or per exam (rows of exam_groups) for exam-level tasks."""
    if not exam_level:
        return data.labels[idx], proba
    members, y, _ = exam_groups(data, idx)
    pos = {int(i): k for k, i in enumerate(idx)}
    return y, aggregate(proba, [np.array([pos[int(i)] for i in m]) for m in members], exam_aggregation)


def _warmup_cosine_lr(step: int, lr: float, warmup: int, total: int) -> float:
    """Linear warm-up over the first `warmup` steps, then a cosine decay to 0 at `total`."""
    return lr * (step + 1) / warmup if step < warmup else \
        lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def _train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, pixels: torch.Tensor, labels: torch.Tensor,
                 weight: torch.Tensor | None, fit: np.ndarray, g: torch.Generator, cfg,
                 lr_at, step: int, loss_fn=None) -> tuple[float, int]:
    """One epoch over `fit` in an order drawn from `g` (before the batches' augmentations, also from
    `g`); `lr_at(step)` is the learning rate of a step. Returns (mean training loss, steps so far)."""
    model.train()
    order = fit[torch.randperm(len(fit), generator=g).numpy()]
    losses = []
    for s in range(0, len(order), cfg.batch_size):
        batch = order[s:s + cfg.batch_size]
        apply_schedules(optimizer, lr_at(step), cfg.weight_decay, False)
        x = _augment(pixels[batch].float(), g, cfg)
        out = model(x)
        loss = loss_fn(out, labels[batch], weight) if loss_fn else \
            F.cross_entropy(out, labels[batch], weight=weight, label_smoothing=cfg.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 3.0)
        optimizer.step()
        losses.append(float(loss.detach()))
        step += 1
    return float(np.mean(losses)), step
