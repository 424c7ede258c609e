"""Classification metrics and patient-level bootstrap confidence intervals.

Labels are integer class indices 0..C-1 (ordinal tasks keep their order). Scores, where a metric
needs them, are [N, C] class probabilities.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from evaluation.config import EvalConfig


def confusion(y: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """[C, C] counts, rows = truth, columns = prediction."""
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(m, (np.asarray(y, int), np.asarray(pred, int)), 1)
    return m


def accuracy(y, pred, n_classes=None) -> float:
    return float(np.mean(np.asarray(y) == np.asarray(pred))) if len(y) else float("nan")


def balanced_accuracy(y, pred, n_classes: int) -> float:
    m = confusion(y, pred, n_classes)
    support = m.sum(1)
    present = support > 0
    return float(np.mean(np.diag(m)[present] / support[present])) if present.any() else float("nan")


def macro_f1(y, pred, n_classes: int) -> float:
    m = confusion(y, pred, n_classes)
    tp = np.diag(m).astype(float)
    denom = m.sum(0) + m.sum(1)
    present = m.sum(1) > 0
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return float(f1[present].mean()) if present.any() else float("nan")


def quadratic_kappa(y, pred, n_classes: int) -> float:
    """Cohen's kappa with quadratic weights (the KL-grade agreement statistic)."""
    m = confusion(y, pred, n_classes).astype(float)
    n = m.sum()
    if n == 0:
        return float("nan")
    i, j = np.indices((n_classes, n_classes))
    w = (i - j) ** 2 / max((n_classes - 1) ** 2, 1)
    expected = np.outer(m.sum(1), m.sum(0)) / n
    denom = (w * expected).sum()
    return float(1 - (w * m).sum() / denom) if denom > 0 else 0.0


def auroc(y, score) -> float:
    """Binary AUROC from the positive-class score (Mann-Whitney, ties counted half)."""
    y, score = np.asarray(y), np.asarray(score, float)
    pos, neg = score[y == 1], score[y == 0]
    if not len(pos) or not len(neg):
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    allv = np.concatenate([pos, neg])[order]
    # average ranks over ties
    uniq, start, counts = np.unique(allv, return_index=True, return_counts=True)
    avg = start + (counts - 1) / 2 + 1
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def auprc(y, score) -> float:
    """Average precision of the positive class."""
    y, score = np.asarray(y), np.asarray(score, float)
    if not (y == 1).any():
        return float("nan")
    order = np.argsort(-score, kind="mergesort")
    ranked, hits = score[order], (y[order] == 1).astype(float)
    cut = np.r_[np.flatnonzero(np.diff(ranked) != 0), len(ranked) - 1]  # one threshold per distinct score
    tp = np.cumsum(hits)[cut]
    precision, recall = tp / (cut + 1), tp / hits.sum()
    return float((np.diff(np.r_[0.0, recall]) * precision).sum())


LABEL_METRICS: dict[str, Callable] = {"accuracy": accuracy, "balanced_accuracy": balanced_accuracy,
                                      "macro_f1": macro_f1, "qwk": quadratic_kappa}


def metric_set(kind: str) -> list[str]:
    names = ["accuracy", "balanced_accuracy", "macro_f1"]
    if kind == "ordinal":
        names.append("qwk")
    if kind == "binary":
        names += ["auroc", "auprc"]
    return names


def primary_metric(kind: str) -> str:
    """The metric a task kind is read by (and its hyper-parameters chosen on)."""
    return {"ordinal": "qwk", "binary": "auroc"}.get(kind, "balanced_accuracy")


def proba_scorer(kind: str, n_classes: int) -> Callable[[np.ndarray, np.ndarray], float]:
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


def compute(name: str, y, pred, proba, n_classes: int) -> float:
    if name in LABEL_METRICS:
        return LABEL_METRICS[name](y, pred, n_classes)
    score = np.asarray(proba)[:, 1]
    return auroc(y, score) if name == "auroc" else auprc(y, score)


def bootstrap_ci(y, pred, proba, patients, names: list[str], n_classes: int, n_boot: int = EvalConfig.n_boot,
                 seed: int = 0, level: float = 0.95) -> dict[str, tuple[float, float, float]]:
    """{metric: (point, low, high)}: resampling patients (all of a patient's images together)."""
    y, pred, patients = np.asarray(y), np.asarray(pred), np.asarray(patients)
    proba = np.asarray(proba) if proba is not None else np.zeros((len(y), n_classes))
    uniq, inverse = np.unique(patients, return_inverse=True)
    members = [np.flatnonzero(inverse == i) for i in range(len(uniq))]
    rng = np.random.default_rng(seed)
    draws = {n: [] for n in names}
    for _ in range(n_boot):
        pick = rng.integers(0, len(uniq), len(uniq))
        idx = np.concatenate([members[i] for i in pick])
        for n in names:
            draws[n].append(compute(n, y[idx], pred[idx], proba[idx], n_classes))
    alpha = (1 - level) / 2
    out = {}
    for n in names:
        d = np.asarray(draws[n], float)
        d = d[np.isfinite(d)]
        point = compute(n, y, pred, proba, n_classes)
        lo, hi = (np.quantile(d, [alpha, 1 - alpha]) if len(d) else (np.nan, np.nan))
        out[n] = (float(point), float(lo), float(hi))
    return out
