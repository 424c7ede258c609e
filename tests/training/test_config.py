"""PretrainConfig: defaults <- file (<- its base) <- key=value; a typo fails naming the closest key; code reads
attributes."""

import ast
import dataclasses
from pathlib import Path

import pytest

from training.config import CONFIG_DIR, ConfigError, PretrainConfig, load_config, parse_override

ROOT = Path(__file__).resolve().parents[2]


def test_override_parsing_reads_yaml_scalars_and_scientific_notation():
    cfg = load_config(None, ["optim.lr=2e-4", "train.steps=20000", "crops.flip=true", "crops.gamma=[0.5, 2]"])
    assert cfg.optim.lr == pytest.approx(2e-4)
    assert cfg.train.steps == 20000 and isinstance(cfg.train.steps, int)
    assert cfg.crops.flip is True and cfg.crops.gamma == (0.5, 2.0) and isinstance(cfg.crops.gamma[1], float)
    assert parse_override("model.kwargs={depth: 4}") == {"model": {"kwargs": {"depth": 4}}}


@pytest.mark.parametrize("override, message", [
    ("optim.lrr=1", "unknown config key 'optim.lrr' (did you mean 'optim.lr'?)"),
    ("train.steps=ten", "config key 'train.steps' takes a number, got 'ten'"),
    ("train.steps=1.5", "takes an integer"),
    ("crops.flip=maybe", "takes true or false"),
    ("loss.centering=median", "one of center, sinkhorn"),
    ("crops.device=tpu", "'crops.device' is 'tpu'; one of loader, gpu"),
    ("optim.batch_size=0", "must be positive"),
    ("head.ibot_prototypes=0", "config key 'head.ibot_prototypes' must be positive, got 0"),
    ("crops.local_crops=-1", "'crops.local_crops' must be 0 or more"),
    ("loss.mask_ratio=[0.5, 0.1]", "'loss.mask_ratio' must satisfy"),
    ("crops.gamma=[1]", "takes a list of 2 values"),
    ("optim", "is not key=value"),
])
def test_bad_overrides_fail_with_one_clear_line(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert message in str(e.value) and "\n" not in str(e.value)


def test_settings_that_only_fail_together_are_refused():
    with pytest.raises(ConfigError, match="runs under train.parallel=ddp only"):
        load_config(None, ["train.parallel=fsdp", "loss.gram_weight=0.5"])


def test_file_layers_and_base_chain(tmp_path):
    (tmp_path / "base.yaml").write_text("optim:\n  lr: 1.0e-3\ntrain:\n  steps: 10\n")
    (tmp_path / "exp.yaml").write_text("base: base.yaml\ntrain:\n  steps: 20\n")
    cfg = load_config(tmp_path / "exp.yaml", ["train.seed=3"])
    assert (cfg.optim.lr, cfg.train.steps, cfg.train.seed) == (1e-3, 20, 3)
    assert cfg.optim.min_lr == PretrainConfig().optim.min_lr  # what no layer sets keeps the dataclass's default
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.yaml")


@pytest.mark.parametrize("text, message", [
    ("optim:\n  warmup_step: 5\n", "unknown config key 'optim.warmup_step' (did you mean 'optim.warmup_steps'?)"),
    ("optimizer:\n  lr: 0.1\n", "unknown config key 'optimizer' (did you mean 'optim'?)"),
    ("train: 5\n", "config key 'train' is a section, got 5"),
])
def test_an_unknown_key_in_a_file_is_one_line_naming_the_closest(tmp_path, text, message):
    from catalog.errors import OrthoError

    (tmp_path / "typo.yaml").write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path / "typo.yaml")
    assert message in str(e.value) and "\n" not in str(e.value) and isinstance(e.value, OrthoError)


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_bundled_config_loads_and_builds_its_backbone_name(path: Path):
    from training.backbone import resolve_name

    cfg = load_config(path.stem)
    assert isinstance(cfg, PretrainConfig) and cfg != PretrainConfig()  # each file changes something
    resolve_name(cfg.model.name, cfg.model.kwargs)
    assert cfg.crops.global_size % 8 == 0


def test_saved_run_config_is_plain_yaml_that_loads_back(tmp_path):
    import yaml

    from training.config import dump_config

    cfg = load_config("cpu-tiny", ["optim.lr=2e-4", "model.kwargs.depth=2"])
    assert cfg.model.kwargs == {"depth": 2}  # an open mapping: merged key by key
    dump_config(cfg, tmp_path / "config.yaml")
    text = (tmp_path / "config.yaml").read_text()
    assert text == yaml.safe_dump(cfg.to_dict(), sort_keys=False) and "!!python" not in text
    assert list(yaml.safe_load(text)) == ["model", "head", "crops", "loss", "optim", "train"]
    assert load_config(tmp_path / "config.yaml") == cfg


def test_a_run_folder_written_before_a_key_existed_resumes_with_its_default(tmp_path):
    """A run's config.yaml is read back on resume: one written before a key existed gets that key's default."""
    import yaml

    cfg = load_config("cpu-small", ["train.seed=5"])
    old = cfg.to_dict()
    del old["train"]["collapse_uniform"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old, sort_keys=False))
    again = load_config(tmp_path / "config.yaml")
    assert again.train.collapse_uniform == PretrainConfig().train.collapse_uniform and again.train.seed == 5


def test_config_errors_are_the_projects_one_error_type():
    from catalog import config
    from catalog.errors import OrthoError

    with pytest.raises(config.ConfigError) as e:
        load_config(None, ["optim.lrr=1"])
    assert isinstance(e.value, OrthoError) and isinstance(e.value, ConfigError)


# --- training reads attributes ----------------------------------------------------------------

# Keys that also name other things training handles as dicts: the schedules (lr, weight_decay, teacher_temp), the
# metrics and summaries (loss, steps), a manifest's codec (name). Every other section and field name is checked.
OTHER_DICTS = {"lr", "weight_decay", "teacher_temp", "loss", "steps", "name"}


def config_keys() -> set[str]:
    keys = set()
    for section in dataclasses.fields(PretrainConfig):
        keys |= {section.name} | {f.name for f in dataclasses.fields(getattr(PretrainConfig(), section.name))}
    return keys - OTHER_DICTS


def string_key_lookups(source: str, keys: set[str]) -> list[tuple[int, str]]:
    """(line, key) of each `x["key"]` and `x.get("key")` whose key is a config key."""
    found = []
    for node in ast.walk(ast.parse(source)):
        key = None
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            key = node.slice.value
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
              and node.args and isinstance(node.args[0], ast.Constant)):
            key = node.args[0].value
        if isinstance(key, str) and key in keys:
            found.append((node.lineno, key))
    return sorted(found)


def test_the_check_finds_string_key_lookups():
    old = 'lr = cfg["optim"]["lr"]\nsize = c["global_size"]\nwarm = o.get("warmup_steps", 0)\nrows[0]["loss"]\n'
    assert string_key_lookups(old, config_keys()) == [(1, "optim"), (2, "global_size"), (3, "warmup_steps")]


def test_training_reads_its_config_through_attributes():
    files = sorted((ROOT / "training").rglob("*.py")) + [ROOT / "flows" / "pretrain.py",
                                                         ROOT / "flows" / "cli" / "pretrain.py"]
    keys = config_keys()
    found = [f"{p.relative_to(ROOT)}:{line} [{key!r}]" for p in files
             for line, key in string_key_lookups(p.read_text(), keys)]
    assert not found, "string-key config lookups (read cfg.section.field instead): " + ", ".join(found)
