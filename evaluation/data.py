"""A task's images, its evaluation splits, label-fraction subsets and exam-level aggregation.

Splits come from the catalog (patient-level, issue 3). Evaluation needs three roles:

  fit     the `train` split: probes and fine-tuning are fitted here;
  select  the `val` split: hyper-parameters (probe regularisation, kNN k, fine-tuning epoch) are
          chosen here and nowhere else;
  test    the `test` split: the only figures reported.

A public dataset often defines only train and val (knee-xray-kl does). When a task has no `test`
image at all, half of its `val` patients, picked by a hash of the patient key (stable, and the
same for every checkpoint), become the untouched test part; the other half stays for selection.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from catalog import db
from catalog.errors import OrthoError
from catalog.tasks import TASKS, TaskSpec, describe
from catalog.workspace import Workspace


class EvaluationError(OrthoError, ValueError):
    """A task or checkpoint that cannot be evaluated; the message is one line for the user."""


@dataclass
class TaskData:
    """One row per image: ids, patients, splits, labels (class indices of the task's classes) and exams."""

    task: str
    kind: str
    classes: tuple[str, ...]
    image_ids: list[str]
    patients: np.ndarray
    splits: np.ndarray
    labels: np.ndarray
    exams: np.ndarray
    modalities: np.ndarray
    body_parts: np.ndarray
    spec: TaskSpec | None = None

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def subset(self, idx: np.ndarray) -> "TaskData":
        idx = np.asarray(idx, dtype=np.int64)
        return TaskData(self.task, self.kind, self.classes, [self.image_ids[i] for i in idx], self.patients[idx],
                        self.splits[idx], self.labels[idx], self.exams[idx], self.modalities[idx],
                        self.body_parts[idx], self.spec)


def load_task(ws: Workspace, task: str) -> TaskData:
    """The task's labelled, non-excluded images with their patient-level split."""
    with db.connection(ws) as con:
        rows = con.execute("""
            SELECT i.image_id, i.patient_key, i.split, l.value,
                   coalesce(i.study_key, i.series_key, i.image_id), coalesce(i.modality, 'unknown'),
                   coalesce(i.body_part, 'unknown')
            FROM images i JOIN labels l USING (image_id)
            WHERE l.task = ? AND NOT i.excluded AND i.split IS NOT NULL
            ORDER BY i.image_id""", [task]).fetchall()
    spec = TASKS.get(task) or describe(task, {r[3] for r in rows})
    index = {c: i for i, c in enumerate(spec.classes)}
    rows = [r for r in rows if r[3] in index]
    col = lambda k: np.array([r[k] for r in rows], dtype=object)  # noqa: E731
    return TaskData(task, spec.kind, spec.classes, [r[0] for r in rows], col(1).astype(str), col(2).astype(str),
                    np.array([index[r[3]] for r in rows], dtype=np.int64), col(4).astype(str), col(5).astype(str),
                    col(6).astype(str), spec)


def _hash01(text: str) -> float:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2 ** 64


@dataclass
class EvalSplits:
    fit: np.ndarray
    select: np.ndarray
    test: np.ndarray
    test_from_val: bool  # the task had no test split: half of val's patients were set aside
    # A task without three patient-disjoint parts is cross-validated instead: (fit rows, test rows) per
    # fold, `test` then every row; `cv` names the scheme (patient-grouped k-fold, or one patient out).
    folds: list[tuple[np.ndarray, np.ndarray]] | None = None
    cv: str | None = None

    def describe(self, data: TaskData) -> dict:
        def part(idx):
            return {"images": int(len(idx)), "patients": int(len(set(data.patients[idx]))),
                    "classes": np.bincount(data.labels[idx], minlength=data.n_classes).tolist()}
        return {"fit": part(self.fit), "select": part(self.select), "test": part(self.test),
                "test_from_val": self.test_from_val,
                "cross_validation": f"{self.cv}, {len(self.folds)} folds" if self.folds else None}


CV_FOLDS = 5
LEAVE_ONE_OUT_BELOW = 30  # patients: under this, every patient is its own fold (k-fold would leave too few)


def cross_validation(data: TaskData, k: int = CV_FOLDS, loo_below: int = LEAVE_ONE_OUT_BELOW) -> EvalSplits:
    """Patient-grouped k-fold over every labelled row (each patient in one fold, by a stable hash), or one
    patient out for tiny tasks. Hyper-parameters are chosen inside each fold's training part, never on its
    held-out patients; a fold whose training part holds a single class is left out."""
    rows = np.arange(len(data.labels))
    patients = sorted(set(data.patients))
    if len(patients) < loo_below:
        fold_of, cv = {p: i for i, p in enumerate(patients)}, "leave-one-patient-out"
    else:
        ranked = sorted(patients, key=lambda p: _hash01(f"eval-fold:{p}"))
        fold_of, cv = {p: i % k for i, p in enumerate(ranked)}, f"patient-grouped {k}-fold"
    assigned = np.array([fold_of[p] for p in data.patients])
    folds = []
    for f in sorted(set(fold_of.values())):
        held = assigned == f
        if len(np.unique(data.labels[~held])) >= 2:
            folds.append((rows[~held], rows[held]))
    return EvalSplits(rows, np.zeros(0, dtype=np.int64), rows, False, folds, cv)


def eval_splits(data: TaskData, small_task_cv: bool = True) -> EvalSplits:
    """fit = train, select = val, test = test (or the hashed half of val when there is no test).
    A task whose splits cannot give all three parts but has at least 4 patients and 2 classes is
    cross-validated (patient-grouped k-fold; one patient out when tiny) when small_task_cv, and said so in
    every result."""
    try:
        return _fixed_splits(data)
    except EvaluationError:
        if small_task_cv and len(set(data.patients)) >= 4 and len(np.unique(data.labels)) >= 2:
            return cross_validation(data)
        raise


def _fixed_splits(data: TaskData) -> EvalSplits:
    fit = np.flatnonzero(data.splits == "train")
    val = np.flatnonzero(data.splits == "val")
    test = np.flatnonzero(data.splits == "test")
    carved = False
    if not len(test) and len(val):
        patients = sorted(set(data.patients[val]))
        held = {p for p in patients if _hash01(f"eval-test:{p}") < 0.5}
        if not held or len(held) == len(patients):  # tiny val: split it by order of the hash instead
            ranked = sorted(patients, key=lambda p: _hash01(f"eval-test:{p}"))
            held = set(ranked[: max(1, len(ranked) // 2)]) if len(ranked) > 1 else set()
        in_test = np.array([p in held for p in data.patients[val]], dtype=bool)
        test, val, carved = val[in_test], val[~in_test], True
    problems = [name for name, idx in (("train", fit), ("val", val), ("test", test)) if not len(idx)]
    if problems:
        raise EvaluationError(f"task {data.task} has no labelled {' or '.join(problems)} images "
                              f"({len(fit)} train, {len(val)} val, {len(test)} test); run `ortho curate` "
                              "and check `ortho tasks list`")
    if len(np.unique(data.labels[fit])) < 2:
        raise EvaluationError(f"task {data.task}: the train split has a single class; nothing can be fitted")
    return EvalSplits(fit, val, test, carved)


def label_fraction(data: TaskData, fit: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A subset of `fit` holding about `fraction` of its patients, stratified by each patient's most
    frequent class, with at least one patient per class present. Patients, not images, are sampled,
    so a patient's images stay together."""
    if fraction >= 1.0:
        return fit
    if not 0 < fraction < 1:
        raise EvaluationError(f"label fraction {fraction} must be in (0, 1]")
    by_patient: dict[str, list[int]] = {}
    for i in fit:
        by_patient.setdefault(data.patients[i], []).append(i)
    strata: dict[int, list[str]] = {}
    for p, idx in sorted(by_patient.items()):
        strata.setdefault(int(np.bincount(data.labels[idx]).argmax()), []).append(p)
    rng = np.random.default_rng([seed, int(round(fraction * 1e6))])
    chosen: list[int] = []
    for _, patients in sorted(strata.items()):
        k = max(1, int(round(fraction * len(patients))))
        for p in rng.permutation(len(patients))[:k]:
            chosen += by_patient[patients[p]]
    return np.sort(np.asarray(chosen, dtype=np.int64))


def exam_groups(data: TaskData, idx: np.ndarray) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """For exam-level tasks: the rows of each exam among `idx` (in first-seen order), the exam label
    (all slices carry it) and the exam's patient."""
    groups: dict[str, list[int]] = {}
    for i in idx:
        groups.setdefault(data.exams[i], []).append(int(i))
    members = [np.asarray(g, dtype=np.int64) for g in groups.values()]
    labels = np.array([np.bincount(data.labels[g]).argmax() for g in members], dtype=np.int64)
    patients = np.array([data.patients[g[0]] for g in members])
    return members, labels, patients


def aggregate(x: np.ndarray, members: list[np.ndarray], how: str = "mean") -> np.ndarray:
    """Slice features (or probabilities) [N, D] -> exam rows [E, D] by mean or max over each exam's slices."""
    if how not in ("mean", "max"):
        raise EvaluationError(f"unknown exam aggregation {how!r}: mean or max")
    fn = np.mean if how == "mean" else np.max
    return np.stack([fn(x[g], axis=0) for g in members]) if members else np.zeros((0, x.shape[1]), x.dtype)


class ShardImages:
    """A task's pixels and metadata read from a shard set (built with `ortho shards build --evaluation`),
    for machines that have the shards but not the store. Samples are kept in memory, as the store
    would serve them: evaluation sets are small next to pretraining sets."""

    def __init__(self, manifest: str | Path):
        from shards.reader import ShardStream

        path = Path(manifest)
        if not path.is_file():
            raise EvaluationError(f"shard manifest {path} does not exist")
        self.manifest = str(path)
        self.pixels: dict[str, np.ndarray] = {}
        self.meta: dict[str, dict] = {}
        for sample in ShardStream(str(path)):
            self.pixels[sample["__key__"]] = sample["image"]
            self.meta[sample["__key__"]] = sample["meta"]

    def get(self, image_id: str) -> np.ndarray:
        return self.pixels[image_id]

    def task(self, task: str) -> TaskData:
        """The shard set's images labelled for `task`, as load_task reads them from the catalog."""
        rows = sorted((k, m) for k, m in self.meta.items() if task in (m.get("labels") or {}) and m.get("split"))
        spec = TASKS.get(task) or describe(task, {m["labels"][task] for _, m in rows})
        index = {c: i for i, c in enumerate(spec.classes)}
        rows = [(k, m) for k, m in rows if m["labels"][task] in index]

        def col(key: str, fallback: str = "unknown") -> np.ndarray:
            return np.array([str(m.get(key) or fallback) for _, m in rows])

        exams = np.array([str(m.get("study_key") or m.get("series_key") or k) for k, m in rows])
        return TaskData(task, spec.kind, spec.classes, [k for k, _ in rows], col("patient_key"), col("split"),
                        np.array([index[m["labels"][task]] for _, m in rows], dtype=np.int64), exams,
                        col("modality"), col("body_part"), spec)
