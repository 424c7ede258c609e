"""Evaluation splits, label fractions and exam aggregation on hand-built tasks."""

import numpy as np
import pytest

from evaluation.data import EvaluationError, TaskData, aggregate, eval_splits, exam_groups, label_fraction


def task(patients, splits, labels, exams=None) -> TaskData:
    n = len(patients)
    return TaskData("t", "multiclass", ("0", "1", "2"), [f"img{i}" for i in range(n)], np.array(patients),
                    np.array(splits), np.array(labels), np.array(exams or [f"e{i}" for i in range(n)]),
                    np.array(["DX"] * n), np.array(["knee"] * n))


def test_without_a_test_split_half_of_val_patients_become_test_stably_and_patient_disjoint():
    patients = [f"p{i // 2}" for i in range(200)]  # two images per patient
    splits = ["train" if i < 120 else "val" for i in range(200)]
    labels = [i % 3 for i in range(200)]
    s = eval_splits(task(patients, splits, labels))
    assert s.test_from_val and len(s.fit) == 120
    sel, test = {patients[i] for i in s.select}, {patients[i] for i in s.test}
    assert sel and test and not sel & test and len(sel | test) == 40
    assert 10 <= len(test) <= 30  # about half
    # the same patients are set aside whatever else the task holds (here: a shuffled order of rows)
    order = np.random.default_rng(0).permutation(200)
    s2 = eval_splits(task([patients[i] for i in order], [splits[i] for i in order], [labels[i] for i in order]))
    assert {patients[order[i]] for i in s2.test} == test


def test_a_declared_test_split_is_used_as_is_and_missing_parts_are_one_line_errors():
    s = eval_splits(task(["a", "b", "c", "d"], ["train", "train", "val", "test"], [0, 1, 0, 1]))
    assert not s.test_from_val and s.test.tolist() == [3] and s.select.tolist() == [2]
    with pytest.raises(EvaluationError, match="no labelled val or test"):
        eval_splits(task(["a", "b"], ["train", "train"], [0, 1]))
    with pytest.raises(EvaluationError, match="single class"):
        eval_splits(task(["a", "b", "c", "d"], ["train", "train", "val", "test"], [1, 1, 0, 1]), small_task_cv=False)


def test_label_fractions_sample_whole_patients_stratified_by_class_and_reproducibly():
    rng = np.random.default_rng(1)
    patients = [f"p{i // 3}" for i in range(300)]  # three images per patient, one class per patient
    labels = [(i // 3) % 3 if (i // 3) % 10 else 2 for i in range(300)]
    data = task(patients, ["train"] * 300, labels)
    fit = np.arange(300)
    for fraction in (0.125, 0.25, 0.5):
        sub = label_fraction(data, fit, fraction, seed=0)
        chosen = {patients[i] for i in sub}
        assert len(sub) == 3 * len(chosen)  # every image of a chosen patient, none of the others
        assert abs(len(chosen) - fraction * 100) <= 3
        assert set(data.labels[sub]) == {0, 1, 2}
        assert np.array_equal(sub, label_fraction(data, fit, fraction, seed=0))
        assert not np.array_equal(sub, label_fraction(data, fit, fraction, seed=1))
    assert np.array_equal(label_fraction(data, fit, 1.0, 0), fit)
    # a rare class keeps at least one patient even at 1/8
    rare = task([f"q{i}" for i in range(41)], ["train"] * 41, [0] * 40 + [1])
    assert 1 in rare.labels[label_fraction(rare, np.arange(41), 0.125, seed=rng.integers(100))]


def test_exam_level_features_are_the_mean_or_max_of_their_slices():
    data = task(["a", "a", "a", "b", "b"], ["train"] * 5, [1, 1, 1, 0, 0], exams=["x", "x", "x", "y", "y"])
    members, labels, patients = exam_groups(data, np.arange(5))
    assert [m.tolist() for m in members] == [[0, 1, 2], [3, 4]]
    assert labels.tolist() == [1, 0] and patients.tolist() == ["a", "b"]
    x = np.array([[1.0, 0], [2, 0], [3, 9], [4, 4], [6, 0]])
    assert aggregate(x, members, "mean").tolist() == [[2.0, 3.0], [5.0, 2.0]]
    assert aggregate(x, members, "max").tolist() == [[3.0, 9.0], [6.0, 4.0]]


def test_a_task_too_small_for_three_parts_is_cross_validated_one_patient_out():
    from evaluation.data import cross_validation

    patients = ["a", "a", "b", "c", "c", "d", "e", "f"]
    data = task(patients, ["train"] * 7 + ["val"], [0, 0, 1, 0, 0, 1, 1, 0])
    s = eval_splits(data)  # one val patient, no test: three parts cannot be formed
    assert s.folds is not None and len(s.folds) == 6
    for fit, test in s.folds:
        assert len({patients[i] for i in test}) == 1 and not {patients[i] for i in test} & {patients[i] for i in fit}
    assert sorted(np.concatenate([t for _, t in s.folds]).tolist()) == list(range(8))
    assert "leave-one-patient-out" in s.describe(data)["cross_validation"]
    with pytest.raises(EvaluationError):
        eval_splits(data, small_task_cv=False)
    assert len(cross_validation(data).folds) == 6


def test_cross_validated_probes_pool_every_fold_and_separable_features_score_high():
    from evaluation.config import EvalConfig
    from evaluation.evaluator import Evaluation

    rng = np.random.default_rng(0)
    patients = [f"p{i}" for i in range(12)]
    labels = [i % 2 for i in range(12)]
    data = task(patients, ["train"] * 12, labels)
    data.kind, data.classes = "binary", ("0", "1")
    x = np.eye(4)[np.array(labels)] * 5 + rng.normal(0, 0.3, (12, 4))  # one direction per class (cosine kNN)
    ev = Evaluation(None, EvalConfig(protocols=["linear", "knn"], seeds=1, knn_ks=(3,), n_boot=50), "t")
    ev.done, ev.total = 0, 2
    ev.frozen(data, eval_splits(data), x, "m", lambda f: [0], False, {})
    assert [r["protocol"] for r in ev.results] == ["linear", "knn"]
    for r in ev.results:
        assert r["n_test"] == 12 and r["test_patients"] == 12  # every patient predicted once, held out
        assert r["metrics"]["accuracy"][0] == 1.0 and r["metrics"]["auroc"][0] == 1.0
        assert r["chosen"]["folds"] == 12


def test_a_larger_task_in_one_split_is_cross_validated_in_five_patient_grouped_folds():
    from evaluation.data import cross_validation

    patients = [f"p{i // 2}" for i in range(200)]  # 100 patients, two knees each, all declared "test"
    data = task(patients, ["test"] * 200, [i % 3 for i in range(200)])
    s = eval_splits(data)
    assert len(s.folds) == 5 and s.describe(data)["cross_validation"] == "patient-grouped 5-fold, 5 folds"
    held = [{patients[i] for i in test} for _, test in s.folds]
    assert all(19 <= len(h) <= 21 for h in held) and not set.intersection(*held)
    for fit, test in s.folds:
        assert not {patients[i] for i in fit} & {patients[i] for i in test}
    assert sorted(np.concatenate([t for _, t in s.folds]).tolist()) == list(range(200))
    assert [t.tolist() for _, t in cross_validation(data).folds] == [t.tolist() for _, t in s.folds]  # stable
