"""What an evaluation reads, checked without torch or a model: the checkpoint files, the shard manifest and the tasks'
labels in the catalog. The command line checks them before anything heavy is imported or the orchestrator starts."""

from __future__ import annotations

import os
from pathlib import Path

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
