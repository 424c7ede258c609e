"""The supervised CNN baseline on images with a known answer (a bar's height gives the class): it learns, it
stops early on the selection split and keeps its best epoch there, and it says what budget it used."""

import numpy as np
import pytest
import torch

from evaluation.data import EvaluationError
from evaluation.metrics import proba_scorer
from evaluation.report import group_results, label_efficiency_sentence
from evaluation.supervised import SupervisedConfig, build_cnn, train_supervised
from tests.evaluation.bars import bar_tensors

TINY = SupervisedConfig(model="test_resnet", img_size=32, epochs=3, patience=0, min_steps=0, batch_size=16,
                        lr=1e-2, crop_scale=(0.9, 1.0), rotation=5.0)


def test_the_cnn_learns_a_visible_class_beats_the_majority_and_stays_at_chance_on_shuffled_labels():
    x, data = bar_tensors(150)
    fit, select, test = np.arange(0, 90), np.arange(90, 120), np.arange(120, 150)
    score = proba_scorer("multiclass", 3)
    p = train_supervised(x, data, fit, select, test, TINY, score, seed=0)
    majority = np.bincount(data.labels[fit]).argmax()
    assert p.proba.shape == (30, 3) and np.allclose(p.proba.sum(1), 1, atol=1e-5)
    assert (p.pred == data.labels[test]).mean() >= 0.9 > (data.labels[test] == majority).mean() + 0.3
    b = p.chosen["budget"]
    params = sum(q.numel() for q in build_cnn("test_resnet", 3)[0].parameters())
    assert (b["model"], b["img_size"], b["epochs"], b["epochs_run"], b["params"]) == ("test_resnet", 32, 3, 3, params)
    assert b["seconds"] > 0 and b["threads"] == torch.get_num_threads() and len(p.chosen["history"]) == 3
    shuffled = data.subset(np.arange(150))
    shuffled.labels = np.random.default_rng(3).permutation(data.labels)
    q = train_supervised(x, shuffled, fit, select, test, TINY, score, seed=0)
    assert (q.pred == data.labels[test]).mean() < 0.6  # chance is 1/3; the real labels reach >= 0.9


def test_an_ordinal_task_can_be_learnt_as_one_regressed_grade():
    x, data = bar_tensors(150)
    data.kind = "ordinal"  # the bar's height: three ordered grades
    fit, select, test = np.arange(0, 90), np.arange(90, 120), np.arange(120, 150)
    cfg = SupervisedConfig(**{**TINY.__dict__, "head": "grade", "epochs": 6})  # one regressed output learns slower
    p = train_supervised(x, data, fit, select, test, cfg, proba_scorer("ordinal", 3), seed=0)
    assert p.chosen["head"] == "grade" and p.proba.shape == (30, 3) and np.allclose(p.proba.sum(1), 1, atol=1e-5)
    assert (p.pred == data.labels[test]).mean() >= 0.9


def test_training_stops_after_patience_epochs_without_a_better_select_score_and_keeps_the_best_epoch():
    x, data = bar_tensors(40)
    fit, select = np.arange(0, 30), np.arange(30, 40)
    seen = []

    def falling(y, proba):  # epoch 1 is the best the selection split will ever see
        seen.append(proba.copy())
        return 1.0 - 0.1 * len(seen)

    cfg = SupervisedConfig(model="test_resnet", img_size=32, epochs=20, patience=2, min_steps=0, batch_size=16)
    p = train_supervised(x, data, fit, select, select, cfg, falling, seed=0)
    assert p.chosen["epoch"] == 1 and p.chosen["epochs_run"] == 3 == len(seen) == p.chosen["budget"]["epochs_run"]
    assert np.allclose(p.proba, seen[0], atol=1e-5) and not np.allclose(seen[0], seen[-1], atol=1e-5)


def test_a_small_label_fraction_trains_more_epochs_to_reach_the_minimum_steps():
    x, data = bar_tensors(40)
    cfg = SupervisedConfig(model="test_resnet", img_size=32, epochs=1, min_steps=5, patience=1, batch_size=16)
    p = train_supervised(x, data, np.arange(30), np.arange(30, 40), np.arange(30, 40), cfg,
                         lambda y, proba: 0.0)  # never better than epoch 1: patience alone would stop at 2
    b = p.chosen["budget"]  # 30 images in batches of 16: 2 steps an epoch, 3 epochs to make 5 steps
    assert (b["epochs"], b["epochs_run"], b["steps"], b["min_steps"]) == (3, 3, 6, 5)


def test_an_unknown_model_is_a_one_line_error():
    with pytest.raises(EvaluationError, match="unknown supervised model 'resnet_nope'"):
        build_cnn("resnet_nope", 3)


def _result(model, protocol, fraction, qwk, seed=0, arch=None):
    return {"task": "kl", "model": model, "protocol": protocol, "fraction": fraction, "seed": seed,
            "architecture": arch, "metrics": {"qwk": (qwk, qwk - 0.05, qwk + 0.05)}}


def test_the_label_efficiency_sentence_measures_against_the_supervised_baseline_that_works():
    common = [_result("majority", "majority", 1.0, 0.0)] + \
        [_result("pretrained", "linear", f, q) for f, q in ((0.25, 0.55), (0.5, 0.66), (1.0, 0.7))]
    vit = [_result("supervised", "finetune", 1.0, 0.02, arch="vit_tiny")]
    cnn = [_result("supervised", "train", 1.0, q, seed=s, arch="resnet18") for s, q in enumerate((0.62, 0.64))]
    works = label_efficiency_sentence(group_results(common + vit + cnn, "kl"), "qwk")
    assert works == ("With a linear probe, the pretrained backbone matches the supervised baseline (resnet18 trained "
                     "from random init) trained on 100% of the labels with 50% of them (QWK 0.660 vs 0.630).")
    idle = label_efficiency_sentence(group_results(common + vit, "kl"), "qwk")
    assert idle.startswith("Caution: the best supervised baseline is itself at the majority class's level (QWK 0.020 "
                           "vs 0.000)") and "matches the supervised baseline (vit_tiny fine-tuned" in idle
    cnn_only = [_result("supervised", "train", 1.0, 0.9, arch="resnet18")]
    assert "does not reach the supervised baseline (resnet18 trained from random init) at 100% of the labels " \
           "(QWK 0.900)" in label_efficiency_sentence(group_results(common + cnn_only, "kl"), "qwk")
