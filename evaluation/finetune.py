"""Fine-tuning protocol: a backbone plus a linear classifier, trained end to end (or its last blocks)
for a few epochs with layer-wise lr decay; the epoch kept is the best on the `select` split.

The same function trains the "supervised" baseline: the same architecture from random init, with
the same budget (epochs, batch size, schedule). Images are preprocessed once (as for embedding)
and augmented on the fly with a mild random resized crop and an intensity jitter; no flips
(laterality matters). Exam-level tasks train on slices carrying the exam's label and are scored
per exam on the mean of its slices' probabilities.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from catalog.store import ImageStore
from catalog.workspace import Workspace
from evaluation.data import TaskData, aggregate, exam_groups
from evaluation.embed import preprocess
from evaluation.protocols import Predictions
from training.backbone import apply_schedules, forward_tokens, param_groups


@dataclass
class FinetuneConfig:
    epochs: int = 5
    batch_size: int = 32
    lr: float = 5e-4  # for the head; block i gets lr * layer_decay ** (depth + 1 - (i + 1))
    layer_decay: float = 0.75
    weight_decay: float = 0.05
    warmup_fraction: float = 0.1
    blocks: int = -1  # -1: every block (full fine-tuning); N: only the last N blocks, norm and head
    crop_scale: tuple[float, float] = (0.7, 1.0)
    intensity_jitter: float = 0.1
    label_smoothing: float = 0.1
    balanced: bool = True  # weight the loss by inverse class frequency (KL grades are imbalanced)
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


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
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    depth = len(model.backbone.blocks)
    for block in list(model.backbone.blocks)[depth - blocks:] if blocks else []:
        for p in block.parameters():
            p.requires_grad_(True)
    for p in model.backbone.norm.parameters():
        p.requires_grad_(True)


def _augment(x: torch.Tensor, g: torch.Generator, cfg: FinetuneConfig) -> torch.Tensor:
    """A random resized crop (area in crop_scale, aspect 3/4..4/3) back to full size, and a random
    gain/offset on the normalised intensities."""
    from torchvision.ops import roi_align

    b, _, h, w = x.shape
    area = torch.empty(b).uniform_(*cfg.crop_scale, generator=g)
    log_ratio = torch.empty(b).uniform_(math.log(3 / 4), math.log(4 / 3), generator=g)
    ratio = log_ratio.exp()
    cw = (area * ratio).sqrt().clamp(max=1.0) * w
    ch = (area / ratio).sqrt().clamp(max=1.0) * h
    x0 = torch.rand(b, generator=g) * (w - cw)
    y0 = torch.rand(b, generator=g) * (h - ch)
    boxes = torch.stack([torch.arange(b, dtype=torch.float32), x0, y0, x0 + cw, y0 + ch], dim=1)
    out = roi_align(x, boxes.to(x.dtype), output_size=(h, w), aligned=True)
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
def _predict(model: Classifier, x: torch.Tensor, batch_size: int) -> np.ndarray:
    model.eval()
    out = [F.softmax(model(x[s:s + batch_size].float()).float(), dim=1) for s in range(0, len(x), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, model.head.out_features))


def finetune(backbone: nn.Module, embed_dim: int, pixels: torch.Tensor, data: TaskData, fit: np.ndarray,
             select: np.ndarray, test: np.ndarray, cfg: FinetuneConfig, select_score, seed: int = 0,
             exam_level: bool = False, exam_aggregation: str = "mean", on_progress=None) -> Predictions:
    """Train on `fit`, keep the epoch that scores best on `select`, predict `test`.

    pixels: [N, 1, S, S] preprocessed images, row i for data row i. select_score(y, proba) -> float.
    Returns test predictions per image, or per exam for exam-level tasks (rows of exam_groups(test)).
    """
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = Classifier(copy.deepcopy(backbone), embed_dim, data.n_classes)
    _freeze_to_last_blocks(model, cfg.blocks)
    depth = len(model.backbone.blocks)
    groups = param_groups(model, depth, cfg.layer_decay)
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, math.ceil(len(fit) / cfg.batch_size))
    total = cfg.epochs * steps_per_epoch
    warmup = max(1, int(cfg.warmup_fraction * total))
    labels = torch.from_numpy(data.labels)
    weight = _class_weights(data, fit) if cfg.balanced else None

    def scored(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        proba = _predict(model, pixels[idx], 2 * cfg.batch_size)
        return _unit_scores(data, idx, proba, exam_level, exam_aggregation)

    best_score, best_epoch, best_state, history = -np.inf, 0, None, []
    step = 0
    for epoch in range(1, cfg.epochs + 1):
        loss, step = _train_epoch(model, optimizer, pixels, labels, weight, fit, g, cfg,
                                  lambda s: _warmup_cosine_lr(s, cfg.lr, warmup, total), step)
        score = float(select_score(*scored(select)))
        history.append({"epoch": epoch, "train_loss": loss, "select_score": score})
        if score > best_score or best_state is None:
            best_score, best_epoch = score, epoch
            best_state = copy.deepcopy(model.state_dict())
        if on_progress:
            on_progress(epoch, cfg.epochs)
    model.load_state_dict(best_state)
    _, proba = scored(test)
    return Predictions(proba.argmax(1), proba, {"epoch": best_epoch, "select_score": best_score,
                                                "history": history, "steps": total, "lr": cfg.lr,
                                                "layer_decay": cfg.layer_decay, "blocks": cfg.blocks})


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


def _train_epoch(model: Classifier, optimizer: torch.optim.Optimizer, pixels: torch.Tensor, labels: torch.Tensor,
                 weight: torch.Tensor | None, fit: np.ndarray, g: torch.Generator, cfg: FinetuneConfig,
                 lr_at, step: int) -> tuple[float, int]:
    """One epoch over `fit` in an order drawn from `g` (before the batches' augmentations, also from
    `g`); `lr_at(step)` is the learning rate of a step. Returns (mean training loss, steps so far)."""
    model.train()
    order = fit[torch.randperm(len(fit), generator=g).numpy()]
    losses = []
    for s in range(0, len(order), cfg.batch_size):
        batch = order[s:s + cfg.batch_size]
        apply_schedules(optimizer, lr_at(step), cfg.weight_decay, False)
        x = _augment(pixels[batch].float(), g, cfg)
        loss = F.cross_entropy(model(x), labels[batch], weight=weight, label_smoothing=cfg.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 3.0)
        optimizer.step()
        losses.append(float(loss.detach()))
        step += 1
    return float(np.mean(losses)), step
