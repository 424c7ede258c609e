"""One evaluation: a checkpoint (and its baselines) on downstream tasks, with every protocol and label
fraction asked for, scored on each task's untouched test part.

    run_evaluation(ws, "runs/<run>/backbone.safetensors", ["kl_grade"], resolve_config(["seeds=2"]))

Models compared, side by side:
  pretrained   the checkpoint under evaluation (frozen for kNN/linear; trained further by finetune)
  random       the same architecture at random init (one init per seed), frozen
  supervised   a CNN trained on the task from random init (its own budget), and the same architecture
               fine-tuned from random init with the finetune budget
  pixels       raw pixels (PCA-128 of 64 px images): what any representation must beat
  majority     the most frequent training class
  <name>       any local checkpoint given as a baseline (e.g. Meta's DINOv3 weights), like pretrained

Writes evals/<eval_id>/metrics.json (and the resolved config.yaml beside it) and one catalog row per result
(the `evals` view), only when every result is in: a killed evaluation leaves no half record, and re-running it
with the same id replaces it.

The settings are evaluation/config.py; the models backbones.py; in-domain or not domain.py; what is scored
units.py; the work per task evaluator.py; where results go results.py.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from catalog.ids import new_eval_id
from catalog.unreadable import Unreadable
from catalog.workspace import Workspace
from evaluation.backbones import baseline_checkpoints, load_checkpoint
from evaluation.inputs import check_files, check_tasks
from evaluation.config import EvalConfig, resolve_config
from evaluation.data import EvalSplits, EvaluationError, ShardImages, TaskData, eval_splits, load_task
from evaluation.evaluator import Evaluation
from evaluation.readable import readable_task
from evaluation.results import metrics_doc, write_results

__all__ = ["EvalConfig", "resolve_config", "run_evaluation", "load_tasks", "check_inputs"]  # flows imports these from here

def load_tasks(ws: Workspace, tasks: list[str], source: ShardImages | None,
               unreadable: Unreadable | None = None) -> list[tuple[TaskData, EvalSplits]]:
    """Every task and its evaluation splits, checked before any work starts. With `unreadable`, images of the
    store that cannot be read are left out of their tasks and recorded there (evaluation/readable.py)."""
    loaded = []
    for name in dict.fromkeys(tasks):
        task = source.task(name) if source else load_task(ws, name)
        if unreadable is not None and source is None:
            task = readable_task(ws, task, unreadable)
        if not task.image_ids:
            where = f"shard set {Path(source.manifest).parent.name}" if source else \
                "this catalog (see `ortho tasks list`)"
            raise EvaluationError(f"task {name} has no labelled images in {where}")
        loaded.append((task, eval_splits(task)))
    return loaded


def check_inputs(ws: Workspace, checkpoint: str | os.PathLike, tasks: list[str], cfg: EvalConfig,
                 model_name: str | None = None, shards: str | os.PathLike | None = None) -> None:
    """What can be checked without loading a model or an image (evaluation/inputs.py), and that every task has
    labelled images in the catalog (with `shards`, the labels travel in the shards: read with the images)."""
    check_files(checkpoint, cfg.baselines, model_name, shards)
    if shards is None:
        check_tasks(ws, tasks)
        load_tasks(ws, tasks, None)
    elif not tasks:
        raise EvaluationError("no task to evaluate: give --task (see `ortho tasks list`)")


def run_evaluation(ws: Workspace, checkpoint: str | os.PathLike, tasks: list[str], cfg: EvalConfig | None = None,
                   eval_id: str | None = None, model_name: str | None = None, on_progress=None,
                   shards: str | os.PathLike | None = None) -> Path:
    """Evaluate, write evals/<eval_id>/metrics.json, config.yaml and the catalog rows; returns the eval folder.

    Images, labels, patients and splits come from the catalog and the store, or, with `shards`, from
    a shard set's manifest (its samples carry the same metadata)."""
    cfg = cfg or EvalConfig()
    if not tasks:
        raise EvaluationError("no task to evaluate: give --task (see `ortho tasks list`)")
    eval_id = eval_id or new_eval_id()
    source = ShardImages(shards) if shards else None
    unreadable = Unreadable("evaluate", eval_id)
    loaded = load_tasks(ws, tasks, source, unreadable)
    unreadable.save(ws)
    main = load_checkpoint(checkpoint, model_name)
    others = baseline_checkpoints(cfg.baselines, main)
    ev = Evaluation(ws, cfg, eval_id, on_progress, images=source)
    ev.total = ev.plan(len(loaded), 1 + len(others))
    ev.stage(f"{len(loaded)} task(s), {ev.total} results to score")
    t0 = time.time()
    task_info = [ev.run_task(task, splits, main, others) for task, splits in loaded]
    doc = metrics_doc(eval_id, main, cfg, shards, task_info, ev.results, ev.retrieval, time.time() - t0)
    doc["data"]["unreadable"] = unreadable.counts()  # reason -> labelled images left out: the store could not give them
    return write_results(ws, doc, cfg)
