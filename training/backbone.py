"""`build_backbone`: a timm DINOv3 ViT, or a timm CNN, for grayscale input, random or from a local checkpoint.

Two families share one interface: a DINOv3 ViT (timm's Eva models: CLS token, patch tokens, iBOT masking; the GPU
configs) and a convolutional network (any timm CNN whose features are a map: ResNet, RegNet, ConvNeXt, ...; the
CPU-scale recipe, configs/pretrain/cpu-small.yaml), whose "CLS" is the global average of its last feature map and
whose "patches" are that map's positions.

Weights only ever come from local files; nothing is downloaded (the entry points, `ortho` and
`python -m training`, set `HF_HUB_OFFLINE=1` as a second guard). A checkpoint is a timm safetensors
file (ours, from `export_backbone`), Meta's DINOv3 `.pth` (key names mapped by timm's EVA filter),
or one of our training checkpoints (the teacher's backbone). RGB patch-embedding weights are summed to one channel, which
keeps the response to a grey image (R=G=B) identical.

Also what every user of a backbone shares (pretraining, and evaluation's fine-tuning): its forward pass to tokens
and its layer-wise learning rates.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import timm
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from catalog.errors import OrthoError
from catalog.files import atomic_path, atomic_write

# Names beyond timm's registry: small DINOv3-style ViTs for CPU runs and tests.
VARIANTS: dict[str, tuple[str, dict]] = {
    "vit_tiny_patch16_dinov3": ("vit_small_patch16_dinov3", dict(embed_dim=192, num_heads=3)),
    "vit_tiny_patch8_dinov3": ("vit_small_patch16_dinov3", dict(embed_dim=192, num_heads=3, depth=6, patch_size=8)),
    "vit_pico_patch8_dinov3": ("vit_small_patch16_dinov3", dict(embed_dim=64, num_heads=2, depth=2, patch_size=8)),
}


class CheckpointError(OrthoError, ValueError):
    """A checkpoint that cannot initialise this backbone (missing file, other architecture)."""


@dataclass
class BackboneSpec:
    """What it takes to rebuild the backbone anywhere: saved beside every exported checkpoint."""

    name: str
    timm_name: str
    kwargs: dict
    in_chans: int
    img_size: int
    patch_size: int
    embed_dim: int
    num_prefix_tokens: int
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    family: str = "vit"  # vit | cnn (specs written before CNNs were supported are ViTs)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


@dataclass
class LoadReport:
    source: str
    missing: list[str]
    unexpected: list[str]
    folded_channels: bool = False

    def __str__(self) -> str:
        parts = [f"loaded {self.source}"]
        if self.folded_channels:
            parts.append("RGB patch embedding folded to 1 channel")
        parts.append(f"{len(self.missing)} missing keys{': ' + ', '.join(self.missing[:5]) if self.missing else ''}")
        parts.append(f"{len(self.unexpected)} unexpected{': ' + ', '.join(self.unexpected[:5]) if self.unexpected else ''}")
        return "; ".join(parts)


def resolve_name(name: str, kwargs: dict | None = None) -> tuple[str, dict]:
    base, extra = VARIANTS.get(name, (name, {}))
    if base not in timm.list_models():
        raise CheckpointError(f"unknown backbone '{name}': not a timm model nor one of {', '.join(VARIANTS)}")
    return base, {**extra, **(kwargs or {})}


def build_backbone(name: str, in_chans: int = 1, img_size: int = 224, init: str | os.PathLike = "random",
                   drop_path: float = 0.0, kwargs: dict | None = None) -> tuple[nn.Module, BackboneSpec, LoadReport | None]:
    """A feature extractor (no classifier; a ViT pools its CLS token as upstream DINOv3, a CNN averages its last
    feature map) and how to rebuild it."""
    timm_name, kw = resolve_name(name, kwargs)
    if _is_dinov3_vit(timm_name):
        model = timm.create_model(timm_name, pretrained=False, num_classes=0, in_chans=in_chans, img_size=img_size,
                                  global_pool="token", drop_path_rate=drop_path, **kw)
        shape = dict(family="vit", patch_size=model.patch_embed.patch_size[0], embed_dim=model.embed_dim,
                     num_prefix_tokens=model.num_prefix_tokens)
    else:
        model = _build_cnn(name, timm_name, in_chans, drop_path, kw)
        shape = dict(family="cnn", patch_size=model.feature_info[-1]["reduction"], embed_dim=model.num_features,
                     num_prefix_tokens=0)
    cfg = model.pretrained_cfg
    # Grey input: one channel's statistics are the mean of the RGB ones.
    mean, std = list(cfg.get("mean", (0.5,))), list(cfg.get("std", (0.5,)))
    if in_chans != len(mean):
        mean, std = [sum(mean) / len(mean)] * in_chans, [sum(std) / len(std)] * in_chans
    spec = BackboneSpec(name=name, timm_name=timm_name, kwargs=kw, in_chans=in_chans, img_size=img_size, mean=mean,
                        std=std, **shape)
    report = None
    if str(init) != "random":
        report = load_weights(model, Path(init))
    return model, spec, report


def _is_dinov3_vit(timm_name: str) -> bool:
    """timm's Eva family (DINOv3 ViTs among them): the token layout forward_tokens reads."""
    return timm.models.model_entrypoint(timm_name).__module__.endswith(".eva")


def _build_cnn(name: str, timm_name: str, in_chans: int, drop_path: float, kw: dict) -> nn.Module:
    """A timm model whose features are a map [B, D, h, w] (a CNN); anything else (a ViT of another family) is
    refused by name, since forward_tokens would misread its tokens."""
    try:
        model = timm.create_model(timm_name, pretrained=False, num_classes=0, in_chans=in_chans,
                                  drop_path_rate=drop_path, **kw)
    except TypeError as e:
        raise CheckpointError(f"backbone '{name}' does not take these settings: {str(e)[:160]}") from None
    try:
        with torch.no_grad():
            probe_ndim = model.eval().forward_features(torch.zeros(1, in_chans, 64, 64)).ndim
    except Exception:  # a model with a fixed input size or token layout: not a CNN
        probe_ndim = 0
    model.train()
    if probe_ndim != 4 or not getattr(model, "feature_info", None):
        raise CheckpointError(f"backbone '{name}' is neither a DINOv3 ViT (timm's Eva family) nor a CNN with a "
                              "feature map: choose e.g. vit_small_patch16_dinov3, resnet18 or regnetx_002")
    return model


def is_vit(backbone: nn.Module) -> bool:
    return hasattr(backbone, "patch_embed") and hasattr(backbone, "blocks")


def backbone_depth(backbone: nn.Module) -> int:
    """Blocks for layer-wise lr decay: a ViT's transformer blocks; a CNN is one group (0)."""
    return len(backbone.blocks) if is_vit(backbone) else 0


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"checkpoint {path.name} is unreadable: {type(e).__name__}: {str(e)[:160]}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path.name} does not hold a state dict")
    # Our training checkpoints: the teacher's backbone. Meta's training checkpoints: the same.
    if "teacher" in state and isinstance(state["teacher"], dict):
        state = state["teacher"]
    for key in ("model_ema", "model", "module", "state_dict"):
        if key in state and isinstance(state[key], dict):
            state = state[key]
    for prefix in ("backbone.", "module.backbone.", "_orig_mod.backbone."):
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def load_weights(model: nn.Module, path: Path) -> LoadReport:
    if not is_vit(model):
        return _load_cnn_weights(model, path)
    from timm.models.eva import checkpoint_filter_fn

    state = read_state_dict(path)
    folded = False
    key = "patch_embed.proj.weight"
    want = model.patch_embed.proj.weight.shape[1]
    if key in state and state[key].ndim == 4 and state[key].shape[1] != want:
        if want == 1:
            state[key] = state[key].sum(dim=1, keepdim=True)
            folded = True
        else:
            raise CheckpointError(f"checkpoint {path.name} has {state[key].shape[1]} input channels, the model {want}")
    try:
        state = checkpoint_filter_fn(state, model)
    except Exception as e:
        raise CheckpointError(f"checkpoint {path.name} does not fit {type(model).__name__}: {str(e)[:160]}") from None
    own = model.state_dict()
    for k, v in state.items():
        if k in own and own[k].shape != v.shape:
            raise CheckpointError(f"checkpoint {path.name} is another architecture: {k} is {list(v.shape)} there, "
                                  f"{list(own[k].shape)} here")
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("head")]
    if not any(k.startswith("blocks.") for k in state) or any(k.startswith("blocks.") for k in missing):
        raise CheckpointError(f"checkpoint {path.name} is another architecture: {len(missing)} of the model's "
                              f"weights are missing (e.g. {', '.join(missing[:3]) or 'all blocks'})")
    return LoadReport(path.name, list(missing), list(unexpected), folded)


def _load_cnn_weights(model: nn.Module, path: Path) -> LoadReport:
    """A CNN's state dict (timm key names; ours or torchvision/timm ImageNet files): an RGB stem is folded to one
    channel; every feature weight must be there (a classifier may be missing or extra)."""
    state, own, folded = read_state_dict(path), model.state_dict(), False
    for k, v in list(state.items()):
        if k in own and v.ndim == 4 and own[k].ndim == 4 and v.shape[1] != own[k].shape[1]:
            if own[k].shape[1] != 1 or v.shape[0] != own[k].shape[0]:
                raise CheckpointError(f"checkpoint {path.name} has {v.shape[1]} input channels at {k}, the model "
                                      f"{own[k].shape[1]}")
            state[k], folded = v.sum(dim=1, keepdim=True), True
    for k, v in state.items():
        if k in own and own[k].shape != v.shape:
            raise CheckpointError(f"checkpoint {path.name} is another architecture: {k} is {list(v.shape)} there, "
                                  f"{list(own[k].shape)} here")
    missing, unexpected = model.load_state_dict(state, strict=False)
    classifier = ("fc.", "head.", "classifier.")
    missing = [k for k in missing if not k.startswith(classifier)]
    if missing:
        raise CheckpointError(f"checkpoint {path.name} is another architecture: {len(missing)} of the model's "
                              f"weights are missing (e.g. {', '.join(missing[:3])})")
    return LoadReport(path.name, [], [k for k in unexpected if not k.startswith(classifier)], folded)


def export_backbone(model: nn.Module | dict, spec: BackboneSpec, path: Path) -> Path:
    """Backbone-only safetensors (timm key names) plus `<name>.json` with the spec; written atomically."""
    from safetensors.torch import save_file

    state = model if isinstance(model, dict) else model.state_dict()
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"spec": spec.to_json()})
    atomic_write(path.with_suffix(".json"), spec.to_json() + "\n")
    return path


def load_exported(path: str | os.PathLike) -> tuple[nn.Module, BackboneSpec]:
    """A backbone exported by a run, rebuilt from its spec (in the file's metadata or beside it)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    text = meta.get("spec") or (path.with_suffix(".json").read_text() if path.with_suffix(".json").is_file() else None)
    if text is None:
        raise CheckpointError(f"checkpoint {path.name} carries no backbone spec; pass the model name")
    spec = BackboneSpec(**json.loads(text))
    model, _, _ = build_backbone(spec.name, spec.in_chans, spec.img_size, init=path, kwargs=spec.kwargs)
    return model, spec


def forward_tokens(backbone: nn.Module, images: torch.Tensor, masks: torch.Tensor | None = None,
                   mask_token: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """images [B, C, H, W] -> (cls [B, D], patches [B, P, D]) after the final norm.

    For a ViT, the same steps as timm's Eva.forward_features, with iBOT's substitution between patch embedding
    and position encoding: masks [B, P] (bool) replace those patch embeddings by `mask_token` [D]. For a CNN, the
    positions of its last feature map and their mean (no masking: iBOT needs tokens).
    """
    if not is_vit(backbone):
        if masks is not None:
            raise CheckpointError("iBOT masking needs a ViT backbone (set loss.ibot_weight=0 for a CNN)")
        patches = backbone.forward_features(images).flatten(2).transpose(1, 2)
        return patches.mean(1), patches
    x = backbone.patch_embed(images)  # [B, h, w, D]: the DINOv3 ViTs run with dynamic image size
    if masks is not None:
        b, h, w, d = x.shape
        x = torch.where(masks.view(b, h, w, 1), mask_token.to(x.dtype).view(1, 1, 1, d), x)
    x, rope = backbone._pos_embed(x)
    x = backbone.norm_pre(x)
    for block in backbone.blocks:
        if backbone.grad_checkpointing and torch.is_grad_enabled():
            x = checkpoint(block, x, rope=rope, use_reentrant=False)
        else:
            x = block(x, rope=rope)
    x = backbone.norm(x)
    return x[:, 0], x[:, backbone.num_prefix_tokens:]


# Layer-wise learning rates: AdamW parameter groups with lr decay by depth, no weight decay on biases, norms and
# tokens (pretraining and fine-tuning both).
def layer_id(name: str, depth: int) -> int:
    """0 for the embeddings and tokens, i + 1 for block i, depth + 1 for the final norm and the heads."""
    name = name.removeprefix("backbone.")
    if name.startswith(("patch_embed", "cls_token", "reg_token", "pos_embed", "mask_token", "rope")):
        return 0
    m = re.match(r"blocks\.(\d+)\.", name)
    if m:
        return int(m.group(1)) + 1
    return depth + 1


def param_groups(model: nn.Module, depth: int, layer_decay: float, patch_embed_lr_mult: float = 1.0) -> list[dict]:
    """One group per (lr multiplier, weight-decay flag, prototype layer); `lr_mult`/`wd_mult` scale
    the scheduled values, and the prototype layers can be frozen for the first steps (DINO)."""
    groups: dict[tuple[float, float, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        lr_mult = layer_decay ** (depth + 1 - layer_id(name, depth))
        if name.startswith("backbone.patch_embed"):
            lr_mult *= patch_embed_lr_mult
        no_wd = p.ndim == 1 or name.endswith(("token", "bias")) or "pos_embed" in name
        wd_mult = 0.0 if no_wd else 1.0
        last = name.endswith("prototypes.weight")
        group = groups.setdefault((lr_mult, wd_mult, last), {"params": [], "lr_mult": lr_mult, "wd_mult": wd_mult,
                                                             "is_last_layer": last})
        group["params"].append(p)
    return list(groups.values())


def apply_schedules(optimizer: torch.optim.Optimizer, lr: float, weight_decay: float, freeze_last: bool) -> None:
    for group in optimizer.param_groups:
        group["lr"] = 0.0 if (freeze_last and group["is_last_layer"]) else lr * group["lr_mult"]
        group["weight_decay"] = weight_decay * group["wd_mult"]
