"""Layered pretraining config: defaults here, an experiment YAML over them, `key=value` overrides last.

Every key exists in the defaults, so a typo (`optim.lrr=1`) fails before anything starts, with the
closest real key named. The resolved config is written beside the run's outputs.
"""

from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any

import yaml

DEFAULTS: dict[str, Any] = {
    "model": {
        "name": "vit_small_patch16_dinov3",  # a timm name or one of training.backbone.VARIANTS
        "in_chans": 1,
        "init": "random",  # or a local .safetensors / Meta DINOv3 .pth / our checkpoint.pt
        "drop_path": 0.1,
        "kwargs": {},  # passed to timm.create_model (embed_dim, depth, num_heads, patch_size, ...)
    },
    "head": {
        "prototypes": 65536,
        "ibot_prototypes": 65536,
        "shared": False,  # one head for DINO and iBOT (iBOT's ablation) or two
        "hidden_dim": 2048,
        "bottleneck_dim": 256,
        "layers": 3,
    },
    "crops": {
        "global_size": 224,
        "local_size": 96,
        "local_crops": 8,
        "global_scale": [0.32, 1.0],
        "local_scale": [0.05, 0.32],
        "flip": False,  # laterality matters in radiographs: off by default
        "window_jitter": 0.2,  # window edges move by up to this fraction of the robust range
        "gamma": [0.7, 1.4],
        "blur": [1.0, 0.1, 0.5],  # probability for global crop 1, global crop 2, local crops
        "blur_sigma": [0.1, 2.0],  # in output pixels at the global size
        "noise": 0.02,  # max std of additive Gaussian noise on [0, 1] intensities
        "noise_prob": 0.5,
    },
    "loss": {
        "dino_weight": 1.0,
        "ibot_weight": 1.0,
        "koleo_weight": 0.1,
        "gram_weight": 0.0,  # DINOv3 Gram anchoring, off by default
        "gram_start": 0,  # step at which the Gram anchor is taken and the term turns on
        "gram_refresh": 10000,  # the anchor is refreshed from the teacher every this many steps
        "centering": "center",  # center (DINO) | sinkhorn (DINOv2/v3)
        "center_momentum": 0.9,
        "student_temp": 0.1,
        "teacher_temp": 0.07,
        "warmup_teacher_temp": 0.04,
        "teacher_temp_warmup_steps": 3000,
        "mask_ratio": [0.1, 0.5],
        "mask_probability": 0.5,
    },
    "optim": {
        "batch_size": 64,  # per rank
        "lr": 5.0e-4,
        "min_lr": 1.0e-6,
        "weight_decay": 0.04,
        "weight_decay_end": 0.2,
        "warmup_steps": 1000,
        "schedule": "cosine",  # cosine | constant (after warm-up)
        "layer_decay": 0.9,
        "patch_embed_lr_mult": 0.2,
        "clip_grad": 3.0,
        "betas": [0.9, 0.999],
        "momentum_teacher": 0.992,
        "momentum_teacher_end": 1.0,
        "freeze_last_layer_steps": 0,
    },
    "train": {
        "steps": 1000,
        "checkpoint_every": 500,
        "log_every": 10,
        "seed": 0,
        "num_workers": 4,
        "shuffle_buffer": 1000,
        "verify_shards": True,  # sha256 of every shard before training starts
        "compile": False,
        "precision": "auto",  # auto (bf16 on CUDA, fp32 on CPU) | bf16 | fp32
        "device": "auto",
        "parallel": "ddp",  # ddp | fsdp (FSDP2: parameters, gradients and optimizer state sharded; ViT-L and up)
        "grad_checkpointing": False,
        "tensorboard": True,
        "collapse_std": 0.2,  # warn when the CLS embedding std (x sqrt(dim)) falls below this
        "collapse_entropy": 0.05,  # warn when the teacher's batch entropy falls below this fraction of log(K)
    },
}


class ConfigError(ValueError):
    """A config file or override that does not fit the defaults."""


def _flat_keys(d: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        out.append(prefix + k)
        if isinstance(v, dict) and k != "kwargs":
            out += _flat_keys(v, prefix + k + ".")
    return out


def _check_value(key: str, default: Any, value: Any) -> Any:
    if default is None or key.endswith(".kwargs") or ".kwargs." in key:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}' takes true or false, got {value!r}")
        return value
    if isinstance(default, (int, float)) and not isinstance(default, bool):
        if isinstance(value, str):  # YAML 1.1 reads 2e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}' takes a number, got {value!r}")
        if isinstance(default, int) and isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"config key '{key}' takes an integer, got {value!r}")
        return type(default)(value)
    if isinstance(default, list):
        if not isinstance(value, list) or len(value) != len(default):
            raise ConfigError(f"config key '{key}' takes a list of {len(default)} values, got {value!r}")
        return [_check_value(f"{key}[{i}]", d, v) for i, (d, v) in enumerate(zip(default, value))]
    if isinstance(default, str) and not isinstance(value, str):
        return str(value)
    return value


def _merge(base: dict, update: dict, defaults: dict, prefix: str = "") -> None:
    for key, value in update.items():
        full = prefix + key
        if key not in defaults:
            close = difflib.get_close_matches(full, _flat_keys(DEFAULTS), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown config key '{full}'{hint}")
        if isinstance(defaults[key], dict) and key != "kwargs":
            if not isinstance(value, dict):
                raise ConfigError(f"config key '{full}' is a section, got {value!r}")
            _merge(base[key], value, defaults[key], full + ".")
        elif key == "kwargs":
            if not isinstance(value, dict):
                raise ConfigError(f"config key '{full}' takes a mapping, got {value!r}")
            base[key] = {**base[key], **value}
        else:
            base[key] = _check_value(full, defaults[key], value)


def parse_override(text: str) -> dict:
    """`optim.lr=2e-4` -> {"optim": {"lr": 0.0002}}; values are read as YAML scalars or lists."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not key=value")
    key, _, raw = text.partition("=")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override '{text}': value is not valid YAML ({e.problem})") from None
    out: dict = {}
    node = out
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "pretrain"


def find_config(name: str | Path) -> Path:
    """A path, or the name of a bundled config (`cpu-tiny` -> configs/pretrain/cpu-tiny.yaml)."""
    path = Path(name)
    if path.is_file():
        return path
    bundled = CONFIG_DIR / f"{path.name.removesuffix('.yaml')}.yaml"
    if bundled.is_file():
        return bundled
    known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
    raise ConfigError(f"config file {name} does not exist (bundled configs: {known})")


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """Defaults <- YAML file (which may name a `base:` file, relative to itself) <- overrides."""
    cfg = copy.deepcopy(DEFAULTS)
    for layer in _file_layers(find_config(path)) if path else []:
        _merge(cfg, layer, DEFAULTS)
    for text in overrides:
        _merge(cfg, parse_override(text), DEFAULTS)
    _validate(cfg)
    return cfg


def _file_layers(path: Path, depth: int = 0) -> list[dict]:
    if depth > 8:
        raise ConfigError(f"config {path.name}: 'base:' chain deeper than 8 files")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections")
    base = data.pop("base", None)
    layers = _file_layers(path.parent / base, depth + 1) if base else []
    return layers + [data]


def _validate(cfg: dict) -> None:
    choices = {"loss.centering": ("center", "sinkhorn"), "optim.schedule": ("cosine", "constant"),
               "train.precision": ("auto", "bf16", "fp32"), "train.parallel": ("ddp", "fsdp")}
    for key, allowed in choices.items():
        section, name = key.split(".")
        if cfg[section][name] not in allowed:
            raise ConfigError(f"config key '{key}' is {cfg[section][name]!r}; one of {', '.join(allowed)}")
    positive = ["optim.batch_size", "train.steps", "crops.global_size", "crops.local_size", "head.prototypes",
                "head.ibot_prototypes", "train.checkpoint_every", "train.log_every"]
    for key in positive:
        section, name = key.split(".")
        if cfg[section][name] <= 0:
            raise ConfigError(f"config key '{key}' must be positive, got {cfg[section][name]}")
    if cfg["crops"]["local_crops"] < 0:
        raise ConfigError("config key 'crops.local_crops' must be 0 or more")
    if cfg["train"]["parallel"] == "fsdp" and cfg["loss"]["gram_weight"] > 0:
        raise ConfigError("Gram anchoring (loss.gram_weight > 0) runs under train.parallel=ddp only")
    lo, hi = cfg["loss"]["mask_ratio"]
    if not 0 <= lo <= hi < 1:
        raise ConfigError(f"config key 'loss.mask_ratio' must satisfy 0 <= min <= max < 1, got {[lo, hi]}")


def dump_config(cfg: dict, path: Path) -> None:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
