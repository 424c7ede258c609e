"""Probes and metrics on cases with known answers."""

import numpy as np
import pytest

from evaluation.metrics import auprc, auroc, balanced_accuracy, bootstrap_ci, macro_f1, quadratic_kappa
from evaluation.protocols import knn_predict, linear_probe, majority_predict


def blobs(n=300, classes=3, dim=16, sep=6.0, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    centres = rng.normal(0, sep, (classes, dim))
    return centres[y] + rng.normal(0, 1, (n, dim)), y


def test_separable_features_give_near_perfect_probes_and_shuffled_labels_give_chance():
    x, y = blobs()
    groups = np.arange(len(y)) // 2
    tr, te = slice(0, 200), slice(200, None)
    for pred in (knn_predict(x[tr], y[tr], x[te], 3).pred, linear_probe(x[tr], y[tr], groups[tr], x[te], 3).pred):
        assert (pred == y[te]).mean() > 0.97
    shuffled = np.random.default_rng(1).permutation(y[tr])
    accs = [(knn_predict(x[tr], shuffled, x[te], 3).pred == y[te]).mean(),
            (linear_probe(x[tr], shuffled, groups[tr], x[te], 3).pred == y[te]).mean()]
    assert all(a < 0.55 for a in accs)  # chance is 1/3; far from the 0.97 above


def test_majority_and_metrics_against_hand_counts():
    y = np.array([0, 0, 1, 2])
    pred = np.array([0, 1, 1, 0])
    assert balanced_accuracy(y, pred, 3) == pytest.approx((0.5 + 1 + 0) / 3)
    # F1 = 2TP / (predicted + actual): class 0 = 2/(2+2), class 1 = 2/(2+1), class 2 = 0
    assert macro_f1(y, pred, 3) == pytest.approx((0.5 + 2 / 3 + 0) / 3)
    assert quadratic_kappa(y, y, 3) == 1.0
    assert quadratic_kappa(np.array([0, 1, 2]), np.array([2, 1, 0]), 3) < 0
    assert auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert auprc([0, 1], [0.2, 0.9]) == 1.0
    m = majority_predict(np.array([2, 2, 1]), 4, 3)
    assert (m.pred == 2).all() and m.proba[0].tolist() == pytest.approx([0, 1 / 3, 2 / 3])


def test_bootstrap_resamples_patients_not_images():
    # Patient A: 50 images all right; patient B: 50 images all wrong. Resampling patients gives
    # accuracies of 0, 0.5 or 1; resampling images would cluster tightly around 0.5.
    y = np.zeros(100, int)
    pred = np.r_[np.zeros(50, int), np.ones(50, int)]
    patients = np.array(["A"] * 50 + ["B"] * 50)
    ci = bootstrap_ci(y, pred, None, patients, ["accuracy"], 2, n_boot=400)["accuracy"]
    assert ci[0] == 0.5 and ci[1] == 0.0 and ci[2] == 1.0
