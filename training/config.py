"""Layered pretraining config: defaults here, an experiment YAML over them, `key=value` overrides last.

The project's one config loader (catalog/config.py) over nested dict defaults: every key exists in the
defaults, so a typo (`optim.lrr=1`) fails before anything starts, with the closest real keys named. A list
takes as many values as its default has; `model.kwargs` is an open mapping. The resolved config is written
beside the run's outputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import configs
from catalog import config as loader

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
        "batch_norm": False,  # batch norm in the head's MLP (DINO's use_bn_in_head): a CNN's pooled features share
        #                       a large common component that otherwise pins the teacher to a uniform output
    },
    "crops": {
        "device": "loader",  # loader: crops cut in the loader workers | gpu: workers decode, crops cut batched on
        #                      the training device (training/device_crops.py; docs/training.md, "Input pipeline")
        "decode": "auto",  # with device=gpu, where payloads are decoded: workers (CPU) | device (handed over
        #                    compressed: nvImageCodec on CUDA) | auto: device for HTJ2K sets when nvImageCodec and CUDA
        #                    are there, else workers (docs/training.md, "GPU decode")
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
        "collapse_uniform": 0.98,  # warn when teacher entropy and DINO/iBOT loss stay at this fraction of log(K)
    },
}


class ConfigError(loader.ConfigError):  # its own name: flows/firewall.py lets it through by name
    """A config file or override that does not fit the defaults."""


SCHEMA = loader.schema_of_defaults(DEFAULTS, mappings=("model.kwargs",))


def parse_override(text: str) -> dict:
    """`optim.lr=2e-4` -> {"optim": {"lr": 0.0002}}; values are read as YAML scalars or lists."""
    return loader.parse_override(text, ConfigError)


CONFIG_DIR = configs.path("pretrain")  # package data: found in an installed wheel too


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
    cfg = loader.resolve_tree(DEFAULTS, SCHEMA, [find_config(path)] if path else [], overrides=overrides,
                              error=ConfigError)
    _validate(cfg)
    return cfg


def _validate(cfg: dict) -> None:
    choices = {"loss.centering": ("center", "sinkhorn"), "optim.schedule": ("cosine", "constant"),
               "train.precision": ("auto", "bf16", "fp32"), "train.parallel": ("ddp", "fsdp"),
               "train.device": ("auto", "cuda", "cpu"), "crops.device": ("loader", "gpu"),
               "crops.decode": ("auto", "workers", "device")}
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
    loader.save_resolved(cfg, path)
