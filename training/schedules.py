"""Schedules precomputed as arrays, one value per step (lr, weight decay, teacher momentum and temperature)."""

from __future__ import annotations

import numpy as np

from training.config import PretrainConfig


def warmup_cosine(base: float, final: float, steps: int, warmup_steps: int = 0, start: float = 0.0,
                  constant: bool = False) -> np.ndarray:
    """Linear warm-up from `start` to `base`, then cosine from `base` to `final` (or flat at `base`)."""
    warmup_steps = min(warmup_steps, steps)
    warm = np.linspace(start, base, warmup_steps, endpoint=False)
    rest = steps - warmup_steps
    if constant:
        tail = np.full(rest, base)
    else:
        t = np.arange(rest) / max(rest, 1)
        tail = final + 0.5 * (base - final) * (1 + np.cos(np.pi * t))
    return np.concatenate([warm, tail]).astype(np.float64)


def build_schedules(cfg: PretrainConfig) -> dict[str, np.ndarray]:
    o, loss, steps = cfg.optim, cfg.loss, cfg.train.steps
    temp_warm = min(loss.teacher_temp_warmup_steps, steps)
    return {
        "lr": warmup_cosine(o.lr, o.min_lr, steps, o.warmup_steps, constant=o.schedule == "constant"),
        "weight_decay": warmup_cosine(o.weight_decay, o.weight_decay_end, steps),
        "momentum": warmup_cosine(o.momentum_teacher, o.momentum_teacher_end, steps),
        "teacher_temp": np.concatenate([np.linspace(loss.warmup_teacher_temp, loss.teacher_temp, temp_warm),
                                        np.full(steps - temp_warm, loss.teacher_temp)]),
    }
