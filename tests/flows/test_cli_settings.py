"""Each stage's settings are one typed object whose defaults are written once: every `ortho` option that fills a
field shows that field's default, and a pipeline file's sections are the dataclasses' fields, checked by the one
loader (catalog/config.py)."""

import importlib
import inspect
import typing

import pytest
import typer

from catalog.config import default_of
from curation.clusters import ClusterConfig
from curation.export_dicom import ExportOptions
from evaluation.config import EmbedConfig, EvalConfig
from flows.cli import COMMANDS, GROUPS
from flows.phantom.tree import PhantomSpec
from flows.pipeline import Pipeline, PipelineError
from flows.runners import SHARDS_RUNNER, RunnerConfig
from catalog.errors import BrokenInvariant
from ingest.config import IngestConfig
from ingest.pacs.options import PacsOptions
from ingest.sources import Source
from shards.spec import ShardSetSpec

# the settings objects each command fills: an option named after one of their fields must take its default from it
# (a retyped default would go unseen otherwise)
SETTINGS_OF = {"ingest": (IngestConfig, RunnerConfig), "curate": (RunnerConfig,),
               "shards build": (ShardSetSpec, SHARDS_RUNNER), "evaluate": (EvalConfig,), "embed": (EmbedConfig,),
               "sources add": (Source, PacsOptions), "phantom": (PhantomSpec,), "cluster": (ClusterConfig,),
               "export dicom": (ExportOptions,)}
# options that differ from the field of their name on purpose, and why
ON_PURPOSE = {("phantom", "patients"): "draws the tree asked (6 patients); a pipeline file's None keeps any tree"}


def commands():
    for name, (module, func) in COMMANDS.items():
        yield name, getattr(importlib.import_module(f"flows.cli.{module}"), func)
    for group, (_, subs) in GROUPS.items():
        for name, (module, func) in subs.items():
            yield f"{group} {name}", getattr(importlib.import_module(f"flows.cli.{module}"), func)


def option_infos(fn):
    for p in inspect.signature(fn).parameters.values():
        infos = [p.default] + list(getattr(p.annotation, "__metadata__", ()))
        if isinstance(p.annotation, str):  # postponed annotations: resolve them
            hint = typing.get_type_hints(fn, include_extras=True).get(p.name)
            infos += list(getattr(hint, "__metadata__", ()))
        for info in infos:
            if isinstance(info, typer.models.OptionInfo):
                yield p.name, info


def as_option_text(value):
    """A default as the option takes it: lists and tuples comma-separated, an empty one a list (a repeatable
    option's)."""
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) if value else []
    return value


def mismatches(command: str, fn, settings=()) -> list[str]:
    out = []
    for name, info in option_infos(fn):
        fills = getattr(info, "fills", None)
        if fills is None and (command, name) not in ON_PURPOSE:
            fills = next(((cls, name) for cls in settings if _has_field(cls, name)), None)
        if fills is None:
            continue
        want = as_option_text(default_of(*fills))
        if info.default != want or type(info.default) is not type(want):
            out.append(f"ortho {command} --{name.replace('_', '-')}: {info.default!r}, but "
                       f"{getattr(fills[0], '__name__', type(fills[0]).__name__)}.{fills[1]} is {want!r}")
    return out


def _has_field(cls, name) -> bool:
    """A field with a default (a required one, like a shard set's query, is a required option)."""
    try:
        default_of(cls, name)
    except (BrokenInvariant, AttributeError, TypeError):
        return False
    return True


def test_every_option_that_fills_a_setting_shows_the_dataclass_default():
    found, checked = [], 0
    for command, fn in commands():
        found += mismatches(command, fn, SETTINGS_OF.get(command, ()))
        checked += sum(hasattr(info, "fills") for _, info in option_infos(fn))
    assert not found, found
    # ingest 6, curate 3, shards build 11, evaluate 10, embed 5, cluster 3, sources add 16, phantom 3, export 3
    assert checked >= 60


def retyped(command: str, fn, settings=()) -> list[str]:
    """Options named after a field of the command's settings that write their default again instead of reading
    it from the dataclass (`setting`): equal today, free to drift tomorrow."""
    return [f"ortho {command} --{name.replace('_', '-')}" for name, info in option_infos(fn)
            if not hasattr(info, "fills") and (command, name) not in ON_PURPOSE
            and any(_has_field(cls, name) for cls in settings)]


def test_every_default_of_a_setting_is_written_once_in_its_dataclass():
    found = [o for command, fn in commands() for o in retyped(command, fn, SETTINGS_OF.get(command, ()))]
    assert not found, found
    assert set(SETTINGS_OF) <= {command for command, _ in commands()}  # no entry outlives its command


def test_a_default_written_twice_is_caught_even_before_it_drifts():
    def cluster(seed: int = typer.Option(0), k: str = typer.Option("")):
        pass

    def sources_add(slice_axis: str = typer.Option("auto"), kind: str = typer.Option("internal")):
        pass

    assert retyped("cluster", cluster, (ClusterConfig,)) == ["ortho cluster --seed"]
    assert retyped("sources add", sources_add, (Source, PacsOptions)) == [
        "ortho sources add --slice-axis", "ortho sources add --kind"]


def test_a_retyped_default_that_drifts_is_caught():
    def evaluate(seeds: int = typer.Option(5), pool: str = typer.Option("both")):
        pass

    def shards_build(max_side: int = typer.Option(2048)):
        pass

    assert mismatches("evaluate", evaluate, (EvalConfig,)) == ["ortho evaluate --seeds: 5, but EvalConfig.seeds is 3"]
    assert mismatches("shards build", shards_build, (ShardSetSpec,)) == [
        f"ortho shards build --max-side: 2048, but ShardSetSpec.max_side is {ShardSetSpec.max_side}"]


def test_a_list_default_shows_as_the_text_the_option_takes():
    from flows.cli.evaluate import evaluate

    infos = dict(option_infos(evaluate))
    assert infos["knn_k"].default == "10,20,50" and infos["protocol"].default == "linear,knn"
    assert infos["epochs"].fills == (EvalConfig, "finetune.epochs") and infos["epochs"].default == 5


def write(tmp_path, text: str):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text,says", [
    ("ingest: {batchsize: 8}\n", "ingest: unknown config key 'batchsize' (did you mean 'batch_size'?)"),
    ("curate: {worker: 2}\n", "curate: unknown config key 'worker' (did you mean 'workers'?)"),
    ("shards:\n  - {name: a, query: q, sample_per_shard: 8}\n",
     "shards[0]: unknown config key 'sample_per_shard' (did you mean 'samples_per_shard'?)"),
    ("phantom: {patient: 8}\n", "phantom: unknown config key 'patient' (did you mean 'patients'?)"),
    ("sources:\n  - {name: a, location: /x, path_patern: x}\n",
     "sources[0]: unknown config key 'path_patern' (did you mean 'path_pattern'?)"),
    ("ingest: {batch_size: many}\n", "ingest: config key 'batch_size' takes a number, got 'many'"),
    ("shards:\n  - {name: a, query: q, seed: 1.5}\n", "shards[0]: config key 'seed' takes an integer, got 1.5"),
    ("shards:\n  - {name: a, query: q, include_excluded: 'yes'}\n",
     "shards[0]: config key 'include_excluded' takes true or false, got 'yes'"),
])
def test_the_loader_refuses_an_unknown_key_or_a_wrong_type_in_one_line(tmp_path, text, says):
    with pytest.raises(PipelineError) as e:
        Pipeline.load(write(tmp_path, text))
    assert str(e.value) == says


def test_a_section_fills_its_objects_and_leaves_the_rest_at_their_defaults(tmp_path):
    spec = Pipeline.load(write(tmp_path, "ingest: {batch_size: 8, runner: threads}\n"
                                         "shards:\n  - {name: a, query: q, max_side: 0, codec: htj2k}\n"
                                         "pretrain: {shards: a}\n"
                                         "evaluate: {tasks: [kl_grade], seeds: 1, linear_cs: [0.1, 1.0], "
                                         "finetune: {epochs: 2}, overrides: [n_boot=50]}\n"))
    assert spec.ingest == IngestConfig(batch_size=8) and spec.ingest_runner == RunnerConfig("threads")
    assert spec.curate_runner == RunnerConfig()
    assert spec.shards == [ShardSetSpec("a", "q", max_side=0, codec="htj2k")]
    assert spec.pretrain.name == "pretrain" and spec.pretrain.shards == "a"
    cfg = spec.evaluate_config
    assert (cfg.seeds, cfg.linear_cs, cfg.finetune.epochs, cfg.n_boot) == (1, (0.1, 1.0), 2, 50)
    assert cfg.knn_ks == EvalConfig().knn_ks and spec.evaluate.tasks == ["kl_grade"]
    # the evaluation is named by the settings as written, as before typed sections
    assert spec.evaluate_settings() == {"seeds": 1, "linear_cs": [0.1, 1.0], "finetune": {"epochs": 2}}


def test_the_demo_pipeline_file_fills_every_section():
    import configs

    spec = Pipeline.load(configs.path("pipelines/demo.yaml"))
    assert spec.phantom.hips and [s.name for s in spec.sources][:2] == ["phantom-pacs", "phantom-public"]
    assert spec.ingest.batch_size == 64 and spec.ingest_runner.runner == "processes"
    assert spec.shards[0].samples_per_shard == 64 and spec.shards[0].max_side == default_of(ShardSetSpec, "max_side")
    assert spec.pretrain.config == "cpu-tiny" and spec.evaluate_config.finetune.epochs == 1


def test_the_flows_take_settings_objects_that_prefect_validates_and_records_as_plain_values():
    from pydantic_core import to_jsonable_python

    from curation.run import CurateConfig
    from flows.curate import curate_flow
    from flows.ingest import ingest_flow

    given = {"workspace": "w", "config": IngestConfig(batch_size=8, burned_in="off"),
             "runner": RunnerConfig("threads", 2)}
    params = ingest_flow.validate_parameters(given)  # as Prefect does before a run, the annotations resolved
    assert params["config"] is given["config"] and params["runner"] is given["runner"]
    assert to_jsonable_python(params) == {"workspace": "w", "sources": None, "wait_s": 0.0,
                                          "config": {"batch_size": 8, "retry_quarantined": False, "burned_in": "off"},
                                          "runner": {"runner": "threads", "workers": 2, "address": None}}
    # a deployment's parameters arrive as plain values and are rebuilt into the objects
    params = curate_flow.validate_parameters({"workspace": "w",
                                              "config": {"batch_size": 7, "dedup": {"threshold": 0.7}}})
    assert isinstance(params["config"], CurateConfig) and params["config"].dedup.threshold == 0.7
    assert params["config"].quality == CurateConfig().quality and params["runner"] == RunnerConfig()
