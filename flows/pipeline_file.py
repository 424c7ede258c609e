"""A pipeline file (docs/pipeline.md), read into the stages' settings objects.

Each section fills dataclasses, and its keys are their fields: `ingest:` an IngestConfig and a RunnerConfig,
`curate:` the curate stage's and a RunnerConfig, each `shards:` entry a ShardSetSpec, `pretrain:` a PretrainConfig's
sections over its config file (plus the run's name, shard set and overrides), `evaluate:` an EvalConfig (plus the
evaluation's name, tasks and overrides). The one loader (catalog/config.py) checks every key, naming the
closest field of a typo, and every value against its field's type; a file that cannot run is one line.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from catalog import config as loader
from catalog.errors import OrthoError
from catalog.files import is_remote
from evaluation.config import EvalConfig
from flows.runners import RunnerConfig, RunnerError
from ingest.config import IngestConfig
from ingest.sources import Source
from shards.spec import ShardSetSpec
from training.config import PretrainConfig, load_config

if TYPE_CHECKING:
    from flows.phantom.tree import PhantomSpec


class PipelineError(OrthoError, ValueError):
    """A pipeline file that cannot run; the message is one line."""


@dataclass(frozen=True)
class Sections:
    """The file's top level."""

    workspace: str | None = None
    phantom: dict | None = None  # a PhantomSpec
    sources: list | None = None  # SourceEntry each
    ingest: dict | None = None  # an IngestConfig and a RunnerConfig
    curate: dict | None = None  # a CurateStage and a RunnerConfig
    shards: list | None = None  # ShardSetSpec each
    pretrain: dict | None = None  # a PretrainStage and a PretrainConfig
    evaluate: dict | None = None  # an EvaluateStage and an EvalConfig


@dataclass(frozen=True)
class SourceEntry:
    """A source to register (`ortho sources add`'s settings)."""

    name: str
    location: str  # a folder, s3://..., dicomweb+http(s)://..., dimse://..., or pkg:NAME (test data of a package)
    kind: str = loader.default_of(Source, "kind")
    labels: list[str] = field(default_factory=list)
    path_pattern: str | None = None
    modality: str | None = None
    body_part: str | None = None
    slice_axis: str = loader.default_of(Source, "slice_axis")
    burned_in: str = loader.default_of(Source, "burned_in")
    credentials: str | None = None


@dataclass(frozen=True)
class CurateStage:
    crops: bool | None = None  # the crop search; None: CurateConfig's default
    overrides: list[str] = field(default_factory=list)  # CurateConfig's key=value (dedup.threshold=0.7)


@dataclass(frozen=True)
class PretrainStage:
    shards: str  # the shard set of this file it trains on
    name: str = "pretrain"  # the run folder's name, before the digest of its inputs
    config: str | None = None  # a config of configs/pretrain or a YAML file; the section's PretrainConfig sections
    #                            (model, head, crops, loss, optim, train) go over it, then the overrides
    overrides: list[str] = field(default_factory=list)  # training's key=value (train.steps=40)


@dataclass(frozen=True)
class EvaluateStage:
    name: str = "eval"  # the evaluation id's name, before the digest of its inputs
    tasks: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)  # EvalConfig's key=value over the section's settings


def fill(where: str, values: dict | None, *classes: type) -> tuple:
    """One section: a flat mapping whose keys are the fields of `classes`, checked by the one loader (did-you-mean,
    types), and each class filled from its own fields (absent ones keep their defaults)."""
    schema, defaults = {}, {}
    for cls in classes:
        assert not schema.keys() & loader.schema_of(cls).keys(), f"{where}: two settings objects share a key"
        schema |= loader.schema_of(cls)
        defaults |= {f.name: loader.to_dict(loader.default_of(cls, f.name)) for f in dataclasses.fields(cls)
                     if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}
    try:
        tree = loader.resolve_tree(defaults, schema, layers=[values or {}], error=PipelineError)
        return tuple(loader.build(cls, {k: tree[k] for k in loader.schema_of(cls) if k in tree}, PipelineError)
                     for cls in classes)
    except RunnerError as e:
        raise PipelineError(f"{where}: {e}".replace("--address", "address").replace("--runner", "runner")) from None
    except OrthoError as e:
        raise PipelineError(f"{where}: {e}") from None


@dataclass
class Pipeline:
    path: Path
    raw: dict = field(default_factory=dict)  # the file as written (curate and evaluate ids digest their sections)
    workspace: str | None = None
    phantom: PhantomSpec | None = None
    sources: list[SourceEntry] = field(default_factory=list)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    ingest_runner: RunnerConfig = field(default_factory=RunnerConfig)
    curate: CurateStage = field(default_factory=CurateStage)
    curate_runner: RunnerConfig = field(default_factory=RunnerConfig)
    shards: list[ShardSetSpec] = field(default_factory=list)
    pretrain: PretrainStage | None = None
    pretrain_config: PretrainConfig | None = None  # resolved when the file is read: a typo fails before any stage
    evaluate: EvaluateStage | None = None
    evaluate_config: EvalConfig | None = None  # the evaluate section's settings, its overrides applied

    @classmethod
    def load(cls, path: str | Path) -> "Pipeline":
        path = Path(path)
        raw = loader.read_mapping(path, PipelineError, "pipeline file", shown=path.name)
        (top,) = fill(path.name, raw, Sections)
        spec = cls(path=path, raw=raw, workspace=top.workspace)
        if top.phantom is not None:
            from flows.phantom.tree import PhantomSpec  # the phantom's drawing code: only where a file draws one

            (spec.phantom,) = fill("phantom", top.phantom, PhantomSpec)
        spec.sources = [_entry(f"sources[{i}]", s, SourceEntry, "a name and a location")
                        for i, s in enumerate(top.sources or [])]
        spec.ingest, spec.ingest_runner = fill("ingest", top.ingest, IngestConfig, RunnerConfig)
        spec.curate, spec.curate_runner = fill("curate", top.curate, CurateStage, RunnerConfig)
        spec.shards = [_entry(f"shards[{i}]", s, ShardSetSpec, "a name and a query")
                       for i, s in enumerate(top.shards or [])]
        names = [s.name for s in spec.shards]
        if top.pretrain and top.pretrain.get("shards") not in names:
            raise PipelineError(f"pretrain.shards '{top.pretrain.get('shards')}' is not a shard set of this file "
                                f"({names})")
        if top.pretrain:
            spec.pretrain, _ = fill("pretrain", top.pretrain, PretrainStage, PretrainConfig)  # keys and types
            try:
                spec.pretrain_config = load_config(spec.pretrain.config, spec.pretrain.overrides,
                                                   spec.pretrain_settings())
            except OrthoError as e:
                raise PipelineError(f"pretrain: {e}") from None
        if top.evaluate and not top.pretrain:
            raise PipelineError("evaluate needs a pretrain section (the checkpoint it evaluates)")
        if top.evaluate:
            spec.evaluate, config = fill("evaluate", top.evaluate, EvaluateStage, EvalConfig)
            try:
                spec.evaluate_config = loader.load(EvalConfig, overrides=spec.evaluate.overrides, base=config)
            except OrthoError as e:
                raise PipelineError(f"evaluate: {e}") from None
        return spec

    def resolve(self, location: str) -> Path | None:
        """Paths as given (relative ones from the working directory, like every `ortho` path); URLs as
        they are; `pkg:NAME` for test data shipped with a package (pydicom-test-files, pydicom-data)."""
        if location.startswith("pkg:"):
            from flows.demo import pydicom_folders

            return pydicom_folders().get(location[4:])
        return Path(location) if is_remote(location) else Path(location).expanduser().absolute()

    def pretrain_settings(self) -> dict:
        """The pretrain section's PretrainConfig sections as written, between its config file and its overrides."""
        return {k: v for k, v in (self.raw.get("pretrain") or {}).items()
                if k in {f.name for f in dataclasses.fields(PretrainConfig)}}

    def evaluate_settings(self) -> dict:
        """The evaluate section's EvalConfig keys as written: what names an evaluation (with its inputs)."""
        return {k: v for k, v in (self.raw.get("evaluate") or {}).items()
                if k not in {f.name for f in dataclasses.fields(EvaluateStage)}}


def _entry(where: str, values, cls: type, needs: str):
    """One entry of a list section; the fields without a default must be there."""
    required = [f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if not isinstance(values, dict) or any(k not in values for k in required):
        raise PipelineError(f"{where} needs {needs}")
    return fill(where, values, cls)[0]
