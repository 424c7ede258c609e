"""The settings of one evaluation: which protocols, label fractions, seeds and baselines, and the knobs of each
protocol. Resolved like every stage's config (catalog/config.py): defaults here <- YAML files <- a mapping (a
pipeline file's `evaluate:` section) <- `key=value` overrides; saved beside the results as config.yaml.

    cfg = resolve_config(["protocols=[linear,knn,finetune]", "fractions=[0.25,1.0]", "finetune.epochs=3",
                          "supervised.model=resnet18", "supervised.epochs=30"])
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Iterable

from catalog import config as loader
from evaluation.data import EvaluationError
from evaluation.finetune import FinetuneConfig
from evaluation.inputs import BUILTIN_BASELINES
from evaluation.supervised import SupervisedConfig

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
            raise EvaluationError(f"unknown protocol {bad[0]!r}: choose from {', '.join(PROTOCOLS)}")
        if not self.protocols:
            raise EvaluationError("no protocol to run")
        if any(not 0 < f <= 1 for f in self.fractions):
            raise EvaluationError(f"label fractions must be in (0, 1]: {self.fractions}")
        if self.pool not in ("cls", "mean", "both"):
            raise EvaluationError(f"unknown pooling {self.pool!r}: cls, mean or both")
        if self.exam_aggregation not in ("mean", "max"):
            raise EvaluationError(f"unknown exam aggregation {self.exam_aggregation!r}: mean or max")
        if self.seeds < 1:
            raise EvaluationError("seeds must be at least 1")
        self.fractions = sorted(set(float(f) for f in self.fractions))


def resolve_config(overrides: Iterable[str] = (), file: str | os.PathLike | None = None,
                   settings: dict | None = None) -> EvalConfig:
    """EvalConfig defaults <- `file` (YAML) <- `settings` (plain values) <- `key=value` overrides.
    Raises catalog.config.ConfigError for an unknown key or a value of the wrong type, EvaluationError for
    settings that do not make an evaluation."""
    return loader.load(EvalConfig, [file] if file else [], overrides, layers=[settings] if settings else [])
