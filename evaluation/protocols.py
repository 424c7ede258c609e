"""Probing protocols on frozen features: kNN (DINO's weighted vote) and a linear probe.

Hyper-parameters are never chosen on the split that is reported: the linear probe picks its
regularisation, and kNN its k, on a separate selection split (`val`); without one, the linear
probe falls back to patient-grouped cross-validation on the training split.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from evaluation.config import EvalConfig


@dataclass
class Predictions:
    pred: np.ndarray  # [N] class index
    proba: np.ndarray  # [N, C]
    chosen: dict  # the hyper-parameters used


def _l2(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, n_classes: int, k: int = 20,
                temperature: float = EvalConfig.knn_temperature, block: int = 4096) -> Predictions:
    """Cosine k-nearest neighbours; each neighbour votes exp(similarity / T) for its class (DINO)."""
    a, b = _l2(train_x.astype(np.float32)), _l2(test_x.astype(np.float32))
    k = min(k, len(a))
    proba = np.zeros((len(b), n_classes), dtype=np.float64)
    for s in range(0, len(b), block):
        sim = b[s:s + block] @ a.T
        idx = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        top = np.take_along_axis(sim, idx, axis=1)
        w = np.exp(top / temperature)
        votes = np.zeros((len(idx), n_classes))
        np.add.at(votes, (np.repeat(np.arange(len(idx)), k), train_y[idx].ravel()), w.ravel())
        proba[s:s + block] = votes / votes.sum(1, keepdims=True)
    return Predictions(proba.argmax(1), proba, {"k": k, "temperature": temperature})


def knn_select(train_x: np.ndarray, train_y: np.ndarray, select_x: np.ndarray, select_y: np.ndarray,
               test_x: np.ndarray, n_classes: int, ks: tuple[int, ...] = EvalConfig.knn_ks,
               temperature: float = EvalConfig.knn_temperature, select_score=None) -> Predictions:
    """kNN with k chosen on the selection split (score(y, proba), accuracy by default)."""
    score = select_score or (lambda y, proba: float(np.mean(y == proba.argmax(1))))
    best_k, best = ks[0], -np.inf
    for k in ks:
        value = score(select_y, knn_predict(train_x, train_y, select_x, n_classes, k, temperature).proba)
        if value > best:
            best_k, best = k, value
    p = knn_predict(train_x, train_y, test_x, n_classes, best_k, temperature)
    p.chosen["select_score"] = float(best) if np.isfinite(best) else None
    return p


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, train_groups: np.ndarray, test_x: np.ndarray,
                 n_classes: int, cs: tuple[float, ...] = (0.003, 0.03, 0.3), folds: int = 3,
                 select_metric=None, seed: int = 0, select: tuple[np.ndarray, np.ndarray] | None = None,
                 select_score=None) -> Predictions:
    """Standardised features -> multinomial logistic regression. C is chosen on `select` = (x, y) by
    select_score(y, proba) when given, else by patient-grouped CV on train with select_metric(y, pred)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold
    from sklearn.preprocessing import StandardScaler

    def fit(x, y, c):
        scaler = StandardScaler().fit(x)
        # Features that barely vary (a randomly initialised DINOv3 CLS token differs between images by
        # ~1e-6) would be blown up to float noise: their scale is floored at a small share of the median.
        scaler.scale_ = np.maximum(scaler.scale_, 1e-3 * np.median(scaler.scale_))
        model = LogisticRegression(C=c, max_iter=500, tol=1e-3, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(scaler.transform(x), y)
        return scaler, model

    def predict_proba(scaler, model, x):
        p = np.zeros((len(x), n_classes))
        p[:, model.classes_] = model.predict_proba(scaler.transform(x))
        return p

    score = select_metric or (lambda y, pred: float(np.mean(y == pred)))
    best_c, best = cs[0], -np.inf
    n_folds = min(folds, len(np.unique(train_groups)))
    if select is not None and len(cs) > 1:
        proba_score = select_score or (lambda y, proba: float(np.mean(y == proba.argmax(1))))
        for c in cs:
            scaler, model = fit(train_x, train_y, c)
            value = proba_score(select[1], predict_proba(scaler, model, select[0]))
            if value > best:
                best_c, best = c, value
    elif len(cs) > 1 and n_folds >= 2:
        for c in cs:
            values = []
            for tr, va in GroupKFold(n_splits=n_folds).split(train_x, train_y, train_groups):
                if len(np.unique(train_y[tr])) < 2:
                    continue
                scaler, model = fit(train_x[tr], train_y[tr], c)
                values.append(score(train_y[va], predict_proba(scaler, model, train_x[va]).argmax(1)))
            if values and np.mean(values) > best:
                best_c, best = c, float(np.mean(values))
    scaler, model = fit(train_x, train_y, best_c)
    proba = predict_proba(scaler, model, test_x)
    return Predictions(proba.argmax(1), proba, {"C": best_c, "select_score" if select is not None else "cv_score":
                                                float(best) if np.isfinite(best) else None})


def majority_predict(train_y: np.ndarray, n: int, n_classes: int) -> Predictions:
    counts = np.bincount(train_y, minlength=n_classes)
    proba = np.tile(counts / counts.sum(), (n, 1))
    return Predictions(np.full(n, counts.argmax()), proba, {"class": int(counts.argmax())})


def pca_fit_transform(train_x: np.ndarray, others: list[np.ndarray], dim: int = 128, seed: int = 0):
    from sklearn.decomposition import PCA

    pca = PCA(n_components=min(dim, *train_x.shape), random_state=seed).fit(train_x)
    return pca.transform(train_x), [pca.transform(o) for o in others]
