"""What an evaluation reads, checked without torch or a model: the checkpoint files, the shard manifest and the tasks'
labels in the catalog. The command line checks them before anything heavy is imported or the orchestrator starts."""

from __future__ import annotations

import os
from pathlib import Path

from catalog import db
from catalog.config import did_you_mean
from catalog.tasks import TASKS
from catalog.workspace import Workspace
from evaluation.data import EvaluationError

BUILTIN_BASELINES = ("random", "supervised", "pixels")


def checkpoint_file(path: str | os.PathLike, model_name: str | None = None) -> Path:
    """The file a checkpoint argument names (a run folder: its export), checked without reading it."""
    path = Path(path)
    if path.is_dir():
        path = path / "backbone.safetensors"
    if not path.is_file():
        raise EvaluationError(f"checkpoint {path} does not exist (a finished run exports backbone.safetensors)")
    if not model_name and path.suffix != ".safetensors":
        raise EvaluationError(f"checkpoint {path.name}: give the architecture (--model NAME) for a non-exported file")
    return path


def parse_baseline(text: str) -> tuple[str, str | None, str | None]:
    """'random' | 'supervised' | 'pixels' | PATH | ARCH=PATH -> (name, path, arch)."""
    if text in BUILTIN_BASELINES:
        return text, None, None
    arch, _, path = text.rpartition("=") if "=" in text else ("", "", text)
    return Path(path).stem if Path(path).name != "backbone.safetensors" else Path(path).parent.name, path, arch or None


def check_files(checkpoint: str | os.PathLike, baselines: list[str], model_name: str | None = None,
                shards: str | os.PathLike | None = None) -> None:
    checkpoint_file(checkpoint, model_name)
    for text in baselines:
        _, path, arch = parse_baseline(text)
        if path:
            checkpoint_file(path, arch)
    if shards is not None and not Path(shards).is_file():
        raise EvaluationError(f"shard manifest {shards} does not exist")


def check_tasks(ws: Workspace, tasks: list[str]) -> None:
    """Every task has labelled images in the catalog: a misspelled name is refused in one line, with the closest
    task there is, before a model is loaded (one SQL query; evaluation/data.py loads the images later)."""
    if not tasks:
        raise EvaluationError("no task to evaluate: give --task (see `ortho tasks list`)")
    with db.connection(ws) as con:
        labelled = {r[0] for r in con.execute("""
            SELECT DISTINCT l.task FROM labels l JOIN images i USING (image_id)
            WHERE NOT i.excluded AND i.split IS NOT NULL""").fetchall()}
    for name in tasks:
        if name not in labelled:
            raise EvaluationError(f"task {name} has no labelled images in this catalog (see `ortho tasks list`)"
                                  + did_you_mean(name, sorted(labelled | set(TASKS)), n=1))
