"""The models an evaluation compares: the checkpoint under evaluation, checkpoints given as baselines, and the
same architecture at random init; each with its spec and, for a pretraining run's backbone, what it was
pretrained on."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from catalog.files import file_sha256
from evaluation.inputs import checkpoint_file, parse_baseline  # noqa: F401  (parse_baseline: its old home)
from training.backbone import BackboneSpec, CheckpointError, build_backbone, load_exported


@dataclass
class Backbone:
    """A model to evaluate: its weights (None for random init), spec and where it came from."""

    name: str
    model: torch.nn.Module | None
    spec: BackboneSpec
    path: str | None
    sha256: str | None
    pretrained_on: dict  # {"body_part": [...], "modality": [...]} of the run's shard set, or {}


def pretraining_domain(path: Path) -> dict:
    """What a run's backbone was pretrained on: the body parts and modalities of its shard set."""
    run_json = path.parent / "run.json"
    if not run_json.is_file():
        return {}
    try:
        run = json.loads(run_json.read_text())
        manifest = path.parent / run["manifest"]  # kept relative to the run folder inside a workspace
        counts = run.get("counts") or json.loads(manifest.read_text()).get("counts", {})
    except (OSError, ValueError, KeyError):
        return {}
    return {"body_part": sorted(counts.get("body_part", {})), "modality": sorted(counts.get("modality", {})),
            "shard_set": run.get("shard_set"), "run_id": run.get("run_id")}


def load_checkpoint(path: str | os.PathLike, model_name: str | None = None, img_size: int | None = None,
                    name: str = "pretrained") -> Backbone:
    """A run folder, an exported backbone.safetensors, or (with model_name) any timm/Meta checkpoint."""
    path = checkpoint_file(path, model_name)
    if model_name:
        model, spec, _ = build_backbone(model_name, 1, img_size or 224, init=path)
    else:
        model, spec = load_exported(path)
    return Backbone(name, model.eval(), spec, str(path), file_sha256(path), pretraining_domain(path))


def random_backbone(spec: BackboneSpec, seed: int) -> Backbone:
    torch.manual_seed(seed)
    model, rspec, _ = build_backbone(spec.name, spec.in_chans, spec.img_size, kwargs=spec.kwargs)
    return Backbone("random", model.eval(), rspec, None, None, {})


def baseline_checkpoints(baselines: list[str], main: Backbone) -> list[Backbone]:
    """The checkpoints among the baselines (the built-in ones are made per task), at main's image size when
    only an architecture is given."""
    out = []
    for text in baselines:
        name, path, arch = parse_baseline(text)
        if path:
            out.append(load_checkpoint(path, arch, main.spec.img_size if arch else None, name=name))
    return out
