"""The pretraining settings: `PretrainConfig`, one frozen dataclass per section of configs/pretrain/*.yaml.

Resolved once by the project's one loader (catalog/config.py): the defaults here <- an experiment YAML (which may
name a `base:` file) <- `key=value` overrides. Every key is a field, so a typo (`optim.lrr=1`) fails before anything
starts, with the closest real keys named; each value is checked against its field's type, and each section checks
its own choices and ranges. `model.kwargs` is an open mapping. The resolved config is written beside the run's
outputs (config.yaml) and read back from there; the code reads attributes (`cfg.optim.lr`), never string keys.
Torch-free: the command line checks a config without importing training's heavy modules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import configs
from catalog import config as loader


class ConfigError(loader.ConfigError):  # its own name: flows/firewall.py lets it through by name
    """A config file or override that does not fit the settings."""


def _one_of(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"config key '{key}' is {value!r}; one of {', '.join(allowed)}")


def _positive(**values: int) -> None:
    """Keyword names are the keys with `__` for the dot (crops__global_size: 'crops.global_size')."""
    for name, value in values.items():
        if value <= 0:
            raise ConfigError(f"config key '{name.replace('__', '.')}' must be positive, got {value}")


@dataclass(frozen=True)
class ModelConfig:
    name: str = "vit_small_patch16_dinov3"  # a timm name or one of training.backbone.VARIANTS
    in_chans: int = 1
    init: str = "random"  # or a local .safetensors / Meta DINOv3 .pth / our checkpoint.pt
    drop_path: float = 0.1
    kwargs: dict = field(default_factory=dict)  # passed to timm.create_model (embed_dim, depth, num_heads, ...)


@dataclass(frozen=True)
class HeadConfig:
    prototypes: int = 65536
    ibot_prototypes: int = 65536
    shared: bool = False  # one head for DINO and iBOT (iBOT's ablation) or two
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    layers: int = 3
    batch_norm: bool = False  # batch norm in the head's MLP (DINO's use_bn_in_head): a CNN's pooled features share
    #                           a large common component that otherwise pins the teacher to a uniform output

    def __post_init__(self):
        _positive(head__prototypes=self.prototypes, head__ibot_prototypes=self.ibot_prototypes)

    @property
    def ibot_k(self) -> int:
        """The iBOT head's prototypes: the DINO head's when the two are one."""
        return self.prototypes if self.shared else self.ibot_prototypes


@dataclass(frozen=True)
class CropsConfig:
    device: str = "loader"  # loader: crops cut in the loader workers | gpu: workers decode, crops cut batched on
    #                         the training device (training/device_crops.py; docs/training.md, "Input pipeline")
    decode: str = "auto"  # with device=gpu, where payloads are decoded: workers (CPU) | device (handed over
    #                       compressed: nvImageCodec on CUDA) | auto: device for HTJ2K sets when nvImageCodec and CUDA
    #                       are there, else workers (docs/training.md, "GPU decode")
    global_size: int = 224
    local_size: int = 96
    local_crops: int = 8
    global_scale: tuple[float, float] = (0.32, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.32)
    flip: bool = False  # laterality matters in radiographs: off by default
    window_jitter: float = 0.2  # window edges move by up to this fraction of the robust range
    gamma: tuple[float, float] = (0.7, 1.4)
    blur: tuple[float, float, float] = (1.0, 0.1, 0.5)  # probability for global crop 1, global crop 2, local crops
    blur_sigma: tuple[float, float] = (0.1, 2.0)  # in output pixels at the global size
    noise: float = 0.02  # max std of additive Gaussian noise on [0, 1] intensities
    noise_prob: float = 0.5

    def __post_init__(self):
        _one_of("crops.device", self.device, ("loader", "gpu"))
        _one_of("crops.decode", self.decode, ("auto", "workers", "device"))
        _positive(crops__global_size=self.global_size, crops__local_size=self.local_size)
        if self.local_crops < 0:
            raise ConfigError("config key 'crops.local_crops' must be 0 or more")


@dataclass(frozen=True)
class LossConfig:
    dino_weight: float = 1.0
    ibot_weight: float = 1.0
    koleo_weight: float = 0.1
    gram_weight: float = 0.0  # DINOv3 Gram anchoring, off by default
    gram_start: int = 0  # step at which the Gram anchor is taken and the term turns on
    gram_refresh: int = 10000  # the anchor is refreshed from the teacher every this many steps
    centering: str = "center"  # center (DINO) | sinkhorn (DINOv2/v3)
    center_momentum: float = 0.9
    student_temp: float = 0.1
    teacher_temp: float = 0.07
    warmup_teacher_temp: float = 0.04
    teacher_temp_warmup_steps: int = 3000
    mask_ratio: tuple[float, float] = (0.1, 0.5)
    mask_probability: float = 0.5

    def __post_init__(self):
        _one_of("loss.centering", self.centering, ("center", "sinkhorn"))
        lo, hi = self.mask_ratio
        if not 0 <= lo <= hi < 1:
            raise ConfigError(f"config key 'loss.mask_ratio' must satisfy 0 <= min <= max < 1, got {[lo, hi]}")

    def weight(self, loss: str) -> float:
        """The weight of the loss term named `loss` (dino, ibot, koleo, gram) in the total."""
        return {"dino": self.dino_weight, "ibot": self.ibot_weight, "koleo": self.koleo_weight,
                "gram": self.gram_weight}[loss]


@dataclass(frozen=True)
class OptimConfig:
    batch_size: int = 64  # per rank
    lr: float = 5.0e-4
    min_lr: float = 1.0e-6
    weight_decay: float = 0.04
    weight_decay_end: float = 0.2
    warmup_steps: int = 1000
    schedule: str = "cosine"  # cosine | constant (after warm-up)
    layer_decay: float = 0.9
    patch_embed_lr_mult: float = 0.2
    clip_grad: float = 3.0
    betas: tuple[float, float] = (0.9, 0.999)
    momentum_teacher: float = 0.992
    momentum_teacher_end: float = 1.0
    freeze_last_layer_steps: int = 0

    def __post_init__(self):
        _one_of("optim.schedule", self.schedule, ("cosine", "constant"))
        _positive(optim__batch_size=self.batch_size)


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000
    checkpoint_every: int = 500
    log_every: int = 10
    seed: int = 0
    num_workers: int = 4
    shuffle_buffer: int = 1000
    verify_shards: bool = True  # sha256 of every shard before training starts
    compile: bool = False
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | bf16 | fp32
    device: str = "auto"
    parallel: str = "ddp"  # ddp | fsdp (FSDP2: parameters, gradients and optimizer state sharded; ViT-L and up)
    grad_checkpointing: bool = False
    tensorboard: bool = True
    collapse_std: float = 0.2  # warn when the CLS embedding std (x sqrt(dim)) falls below this
    collapse_entropy: float = 0.05  # warn when the teacher's batch entropy falls below this fraction of log(K)
    collapse_uniform: float = 0.98  # warn when teacher entropy and DINO/iBOT loss stay at this fraction of log(K)

    def __post_init__(self):
        _one_of("train.precision", self.precision, ("auto", "bf16", "fp32"))
        _one_of("train.parallel", self.parallel, ("ddp", "fsdp"))
        _one_of("train.device", self.device, ("auto", "cuda", "cpu"))
        _positive(train__steps=self.steps, train__checkpoint_every=self.checkpoint_every,
                  train__log_every=self.log_every)


@dataclass(frozen=True)
class PretrainConfig:
    """A pretraining run's settings; each section is a YAML section of configs/pretrain/*.yaml."""

    model: ModelConfig = field(default_factory=ModelConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    crops: CropsConfig = field(default_factory=CropsConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        if self.train.parallel == "fsdp" and self.loss.gram_weight > 0:
            raise ConfigError("Gram anchoring (loss.gram_weight > 0) runs under train.parallel=ddp only")

    @property
    def ibot(self) -> bool:
        """Whether the iBOT masked-token loss is on (its head, its masks)."""
        return self.loss.ibot_weight > 0

    def to_dict(self) -> dict:
        """Plain YAML/JSON values, sections in order: what config.yaml and a checkpoint's `config` hold."""
        return loader.to_dict(self)


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


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                settings: dict | None = None) -> PretrainConfig:
    """Defaults <- YAML file (a bundled name or a path; its `base:` chain first) <- `settings` (sections of plain
    values: a pipeline file's) <- `key=value` overrides."""
    return loader.load(PretrainConfig, [find_config(path)] if path else [], overrides,
                       layers=[settings] if settings else [], error=ConfigError)


def dump_config(cfg: PretrainConfig, path: Path) -> None:
    loader.save_resolved(cfg, path)
