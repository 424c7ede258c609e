"""Layered config: defaults <- file (<- its base) <- key=value; typos fail with the closest key."""

from pathlib import Path

import pytest

from training.config import CONFIG_DIR, ConfigError, load_config, parse_override


def test_override_parsing_reads_yaml_scalars_and_scientific_notation():
    cfg = load_config(None, ["optim.lr=2e-4", "train.steps=20000", "crops.flip=true", "crops.gamma=[0.5, 2]"])
    assert cfg["optim"]["lr"] == pytest.approx(2e-4)
    assert cfg["train"]["steps"] == 20000 and isinstance(cfg["train"]["steps"], int)
    assert cfg["crops"]["flip"] is True and cfg["crops"]["gamma"] == [0.5, 2.0]
    assert parse_override("model.kwargs={depth: 4}") == {"model": {"kwargs": {"depth": 4}}}


@pytest.mark.parametrize("override, message", [
    ("optim.lrr=1", "unknown config key 'optim.lrr' (did you mean 'optim.lr'?)"),
    ("train.steps=ten", "config key 'train.steps' takes a number, got 'ten'"),
    ("train.steps=1.5", "takes an integer"),
    ("crops.flip=maybe", "takes true or false"),
    ("loss.centering=median", "one of center, sinkhorn"),
    ("crops.device=tpu", "'crops.device' is 'tpu'; one of loader, gpu"),
    ("optim.batch_size=0", "must be positive"),
    ("crops.gamma=[1]", "takes a list of 2 values"),
    ("optim", "is not key=value"),
])
def test_bad_overrides_fail_with_one_clear_line(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert message in str(e.value) and "\n" not in str(e.value)


def test_file_layers_and_base_chain(tmp_path):
    (tmp_path / "base.yaml").write_text("optim:\n  lr: 1.0e-3\ntrain:\n  steps: 10\n")
    (tmp_path / "exp.yaml").write_text("base: base.yaml\ntrain:\n  steps: 20\n")
    cfg = load_config(tmp_path / "exp.yaml", ["train.seed=3"])
    assert (cfg["optim"]["lr"], cfg["train"]["steps"], cfg["train"]["seed"]) == (1e-3, 20, 3)
    (tmp_path / "typo.yaml").write_text("optim:\n  warmup_step: 5\n")
    with pytest.raises(ConfigError, match="did you mean 'optim.warmup_steps'"):
        load_config(tmp_path / "typo.yaml")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.yaml")


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_bundled_config_loads_and_builds_its_backbone_name(path: Path):
    from training.backbone import resolve_name

    cfg = load_config(path.stem)
    resolve_name(cfg["model"]["name"], cfg["model"]["kwargs"])
    assert cfg["crops"]["global_size"] % 8 == 0


def test_saved_run_config_is_plain_yaml_that_loads_back(tmp_path):
    import yaml

    from training.config import dump_config

    cfg = load_config("cpu-tiny", ["optim.lr=2e-4", "model.kwargs.depth=2"])
    assert cfg["model"]["kwargs"] == {"depth": 2}  # an open mapping: merged key by key
    dump_config(cfg, tmp_path / "config.yaml")
    assert (tmp_path / "config.yaml").read_text() == yaml.safe_dump(cfg, sort_keys=False)
    assert load_config(tmp_path / "config.yaml") == cfg


def test_config_errors_are_the_projects_one_error_type():
    from catalog import config
    from catalog.errors import OrthoError

    with pytest.raises(config.ConfigError) as e:
        load_config(None, ["optim.lrr=1"])
    assert isinstance(e.value, OrthoError) and isinstance(e.value, ConfigError)
