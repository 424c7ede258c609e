"""The settings of one evaluation: which protocols, label fractions, seeds and baselines, and the knobs of each
protocol. Resolved like every stage's config (catalog/config.py): defaults here <- YAML files <- a mapping (a
pipeline file's `evaluate:` section) <- `key=value` overrides; saved beside the results as config.yaml.

    cfg = resolve_config(["protocols=[linear,knn,finetune]", "fractions=[0.25,1.0]", "finetune.epochs=3",
                          "supervised.model=resnet18", "supervised.epochs=30"])
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Iterable

from catalog import config as loader


def invalid(message: str) -> Exception:
    """The evaluation's error (evaluation/data.py imports duckdb: not needed to read these defaults)."""
    from evaluation.data import EvaluationError

    return EvaluationError(message)


@dataclass
class FinetuneConfig:
    epochs: int = 5
    batch_size: int = 32
    lr: float = 5e-4  # for the head; block i gets lr * layer_decay ** (depth + 1 - (i + 1))
    layer_decay: float = 0.75
    weight_decay: float = 0.05
    warmup_fraction: float = 0.1
    blocks: int = -1  # -1: every block (full fine-tuning); N: only the last N blocks, norm and head
    crop_scale: tuple[float, float] = (0.7, 1.0)
    intensity_jitter: float = 0.1
    label_smoothing: float = 0.1
    balanced: bool = True  # weight the loss by inverse class frequency (KL grades are imbalanced)
    rotation: float = 0.0  # degrees: a uniform random rotation in [-rotation, rotation]
    hflip: bool = False  # mirror half of the images (only where laterality does not change the label)
    patience: int = 0  # stop after this many epochs without a better select score (0: run every epoch)
    min_steps: int = 0  # train at least this many steps: more epochs for small label fractions (0: epochs only)
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SupervisedConfig:
    # The budget measured on the real knees (docs/benchmarks.md, bench/supervised_baseline.py): RegNetX-200MF
    # (2.3M parameters) at 128 px for up to 12 epochs and at least 480 steps (12 epochs of half the knees).
    model: str = "regnetx_002"  # any timm CNN (resnet18, resnet10t, convnext_atto, ...); in_chans=1, random init
    img_size: int = 128
    epochs: int = 12
    patience: int = 4  # early stopping on select: epochs without a better score
    min_steps: int = 480  # at least this many steps, early stopping or not: more epochs for small fractions
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.05
    crop_scale: tuple[float, float] = (0.75, 1.0)
    rotation: float = 10.0  # degrees
    intensity_jitter: float = 0.1  # brightness (offset) and contrast (gain) on normalised intensities
    hflip: bool = False  # off by default: laterality matters for some tasks (a KL grade does not depend on it)
    label_smoothing: float = 0.0
    balanced: bool = False  # inverse-frequency class weights in the loss
    head: str = "classes"  # classes: cross-entropy; grade: one regressed grade (ordinal and binary tasks)
    vit: bool = True  # also train the checkpoint's architecture from random init, with the fine-tuning budget

    def __post_init__(self):
        if self.head not in ("classes", "grade"):
            raise invalid(f"unknown supervised head {self.head!r}: classes or grade")


FROZEN = ("linear", "knn")
PROTOCOLS = ("linear", "knn", "finetune")


@dataclass
class EvalConfig:
    protocols: list[str] = field(default_factory=lambda: ["linear", "knn"])
    fractions: list[float] = field(default_factory=lambda: [1.0])
    seeds: int = 3
    baselines: list[str] = field(default_factory=lambda: ["random"])
    pool: str = "both"  # cls | mean | both (concatenated)
    knn_ks: tuple[int, ...] = (10, 20, 50)
    knn_temperature: float = 0.07
    linear_cs: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0, 10.0)  # 1.0 was often chosen: the sweep goes past it
    exam_aggregation: str = "mean"  # slices -> exam: mean (default) or max of features / probabilities
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    supervised: SupervisedConfig = field(default_factory=SupervisedConfig)  # the `supervised` baseline's CNN
    n_boot: int = 1000
    retrieval_queries: int = 5
    batch_size: int = 64

    def __post_init__(self):
        bad = [p for p in self.protocols if p not in PROTOCOLS]
        if bad:
            raise invalid(f"unknown protocol {bad[0]!r}: choose from {', '.join(PROTOCOLS)}")
        if not self.protocols:
            raise invalid("no protocol to run")
        if any(not 0 < f <= 1 for f in self.fractions):
            raise invalid(f"label fractions must be in (0, 1]: {self.fractions}")
        if self.pool not in ("cls", "mean", "both"):
            raise invalid(f"unknown pooling {self.pool!r}: cls, mean or both")
        if self.exam_aggregation not in ("mean", "max"):
            raise invalid(f"unknown exam aggregation {self.exam_aggregation!r}: mean or max")
        if self.seeds < 1:
            raise invalid("seeds must be at least 1")
        self.fractions = sorted(set(float(f) for f in self.fractions))


POOLS = ("cls", "mean")  # what `ortho embed` keeps of a backbone's tokens


@dataclass
class EmbedConfig:
    """`ortho embed`'s settings (evaluation/catalog_embed.py), here so the command reads its defaults without torch."""

    checkpoint: str  # a pretraining run (its folder, or its name under runs/), an exported backbone or a timm file
    model_name: str | None = None  # the architecture of a file that is not an exported backbone
    img_size: int | None = None  # input size [default: the backbone's]
    query: str | None = None  # SQL returning image_id [default: every image]
    pool: str = "cls"  # cls: the CLS token; mean: the mean of the patch tokens (a model without SSL training)
    batch_size: int = 32
    part_size: int = 2048  # vectors per Parquet part


def resolve_config(overrides: Iterable[str] = (), file: str | os.PathLike | None = None,
                   settings: dict | None = None) -> EvalConfig:
    """EvalConfig defaults <- `file` (YAML) <- `settings` (plain values) <- `key=value` overrides.
    Raises catalog.config.ConfigError for an unknown key or a value of the wrong type, EvaluationError for
    settings that do not make an evaluation."""
    return loader.load(EvalConfig, [file] if file else [], overrides, layers=[settings] if settings else [])
