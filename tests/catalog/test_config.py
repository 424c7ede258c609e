"""The one config loader (catalog/config.py): a dataclass (nested allowed) <- YAML files in order <- key=value;
unknown keys fail with the closest valid ones named, wrong types with one line; the resolved config saved as YAML
loads back to itself. And every stage's settings resolve through it, to exactly the code's defaults."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from catalog import config
from catalog.errors import OrthoError


@dataclass(frozen=True)
class Inner:
    threshold: float = 0.5
    enabled: bool = True
    workers: int | None = None


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)
    names: list[str] = field(default_factory=lambda: ["a"])
    ks: tuple[int, ...] = (1, 2)
    scale: tuple[float, float] = (0.5, 1.0)
    extra: dict = field(default_factory=dict)
    steps: int = 10
    label: str = "x"

    def __post_init__(self):
        if self.steps < 0:
            raise ValueError("steps must be 0 or more")


def test_defaults_files_in_order_then_overrides(tmp_path):
    assert config.load(Outer) == Outer()
    (tmp_path / "a.yaml").write_text("inner: {threshold: 0.7}\nsteps: 3\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\nsteps: 4\nextra: {p: 1}\n")
    (tmp_path / "c.yaml").write_text("label: from-c\n")
    cfg = config.load(Outer, [tmp_path / "b.yaml", tmp_path / "c.yaml"],
                      ["inner.enabled=false", "ks=[3, 5]", "names=[b, c]", "extra.q=0.5", "inner.workers=4"])
    assert cfg == Outer(Inner(0.7, False, 4), ["b", "c"], (3, 5), (0.5, 1.0), {"p": 1, "q": 0.5}, 4, "from-c")
    assert isinstance(cfg.ks, tuple) and isinstance(cfg.inner.threshold, float)
    assert config.load(Outer, overrides=["names=solo", "steps=2.0", "inner.threshold=1"]).names == ["solo"]
    assert config.load(Outer, layers=[{"steps": 7}], overrides=["steps=8"]).steps == 8


@pytest.mark.parametrize("override, message", [
    ("inner.treshold=1", "unknown config key 'inner.treshold' (did you mean 'inner.threshold'?)"),
    ("stepz=1", "unknown config key 'stepz' (did you mean 'steps'?)"),
    ("steps=ten", "config key 'steps' takes a number, got 'ten'"),
    ("steps=1.5", "config key 'steps' takes an integer, got 1.5"),
    ("inner.enabled=maybe", "config key 'inner.enabled' takes true or false, got 'maybe'"),
    ("scale=[1]", "config key 'scale' takes a list of 2 values, got [1]"),
    ("inner=3", "config key 'inner' is a section, got 3"),
    ("extra=3", "config key 'extra' takes a mapping, got 3"),
    ("label=[1, 2]", "config key 'label' takes a string, got [1, 2]"),
    ("steps=-1", "Outer: steps must be 0 or more"),
    ("steps", "override 'steps' is not key=value"),
])
def test_bad_keys_and_values_are_one_line_config_errors(override, message):
    with pytest.raises(config.ConfigError) as e:
        config.load(Outer, overrides=[override])
    assert message in str(e.value) and "\n" not in str(e.value)
    assert isinstance(e.value, OrthoError)


def test_did_you_mean_lists_the_closest_keys():
    with pytest.raises(config.ConfigError, match=r"did you mean 'inner.threshold'\?\); also close: 'inner.enabled'"):
        config.load(Outer, overrides=["inner.thresholds_enabled=1"])


def test_a_file_with_a_typo_names_the_file_key(tmp_path):
    (tmp_path / "typo.yaml").write_text("inner:\n  enabeld: false\n")
    with pytest.raises(config.ConfigError, match="did you mean 'inner.enabled'"):
        config.load(Outer, tmp_path / "typo.yaml")
    with pytest.raises(config.ConfigError, match="does not exist"):
        config.load(Outer, tmp_path / "absent.yaml")


def test_saved_resolved_config_loads_back_to_itself(tmp_path):
    cfg = config.load(Outer, overrides=["inner.threshold=0.9", "ks=[7]", "extra={a: [1, 2]}"])
    path = config.save_resolved(cfg, tmp_path / "settings.yaml")
    assert config.load(Outer, path) == cfg
    assert path.read_text().startswith("inner:\n  threshold: 0.9\n")  # declaration order, plain YAML
    assert [p.name for p in tmp_path.iterdir()] == ["settings.yaml"]


# --- the stages ------------------------------------------------------------------------------

def _stages():
    from curation.run import CurateConfig
    from curation.run import resolve_config as curate_config
    from evaluation.config import EvalConfig
    from evaluation.config import resolve_config as eval_config

    return {"curation": (CurateConfig, curate_config), "evaluation": (EvalConfig, eval_config)}


@pytest.mark.parametrize("stage", ["curation", "evaluation"])
def test_every_stage_resolves_its_defaults_to_the_code_defaults_and_round_trips(stage, tmp_path):
    cls, resolve = _stages()[stage]
    assert resolve() == cls() and resolve([]) == cls()
    saved = config.save_resolved(resolve(), tmp_path / "settings.yaml")
    assert resolve(file=saved) == cls()
    with pytest.raises(config.ConfigError, match="did you mean"):
        resolve(["batch_sise=3"])


def test_stage_overrides_reach_nested_settings():
    from evaluation.data import EvaluationError

    cur = _stages()["curation"][1](["dedup.crops.enabled=false", "quality.min_size=128", "splits.seed=v2"])
    assert (cur.dedup.crops.enabled, cur.quality.min_size, cur.splits.seed) == (False, 128, "v2")
    with pytest.raises(config.ConfigError, match="unknown quality filters"):
        _stages()["curation"][1](["quality.enabled=[nope]"])
    ev = _stages()["evaluation"][1](["protocols=[knn, finetune]", "finetune.epochs=2", "knn_ks=[3, 5]"],
                                    settings={"fractions": [1.0, 0.5], "seeds": 2})
    assert (ev.protocols, ev.fractions, ev.seeds, ev.knn_ks, ev.finetune.epochs) == \
        (["knn", "finetune"], [0.5, 1.0], 2, (3, 5), 2)
    with pytest.raises(EvaluationError, match="unknown protocol"):
        _stages()["evaluation"][1](["protocols=[lineer]"])
    with pytest.raises(config.ConfigError, match="did you mean 'finetune.epochs'"):
        _stages()["evaluation"][1](["finetune.epoch=2"])


def test_a_curation_run_records_its_resolved_settings_beside_its_tables(tmp_path):
    from catalog.workspace import Workspace
    from curation.run import curate, resolve_config

    ws = Workspace.open(tmp_path / "ws")
    cfg = resolve_config(["dedup.threshold=0.7", "batch_size=64"])
    summary = curate(ws, cfg)
    run = ws.curation_dir / summary.run_id
    assert sorted(p.name for p in run.iterdir()) == ["dups.parquet", "leakage.parquet", "quality.parquet",
                                                      "settings.yaml"]
    assert resolve_config(file=run / "settings.yaml") == cfg


def test_invalid_yaml_names_the_line_and_the_problem_never_the_text(tmp_path):
    from catalog.config import ConfigError, read_mapping

    path = tmp_path / "bad.yaml"
    path.write_text("sources:\n  - name: a\n    location: /data/Doe^Jane: [unclosed\n")
    with pytest.raises(ConfigError) as e:
        read_mapping(path)
    assert "line 3" in str(e.value) and "Doe" not in str(e.value) and "unclosed" not in str(e.value)
