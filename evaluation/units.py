"""What a protocol scores: images, or exams (slice features aggregated) for exam-level tasks; and the held-out
predictions of cross-validation folds pooled into one set."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from evaluation.data import TaskData, aggregate, exam_groups
from evaluation.protocols import Predictions


@dataclass
class Units:
    rows: list[np.ndarray]  # data rows of each unit
    labels: np.ndarray
    patients: np.ndarray


def units_of(data: TaskData, idx: np.ndarray, exam_level: bool) -> Units:
    if exam_level:
        return Units(*exam_groups(data, idx))
    return Units([np.array([i]) for i in idx], data.labels[idx], data.patients[idx])


def unit_features(x: np.ndarray, units: Units, how: str) -> np.ndarray:
    return aggregate(x, units.rows, how) if len(units.rows) else np.zeros((0, x.shape[1]), x.dtype)


def pool_folds(parts: list[tuple[Predictions, Units, int]]) -> tuple[Predictions, Units, int]:
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
