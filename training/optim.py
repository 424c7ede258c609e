"""AdamW parameter groups: layer-wise lr decay, no weight decay on biases, norms and tokens."""

from __future__ import annotations

import re

import torch
from torch import nn


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


def build_optimizer(model: nn.Module, depth: int, optim_cfg: dict) -> torch.optim.AdamW:
    groups = param_groups(model, depth, optim_cfg["layer_decay"], optim_cfg["patch_embed_lr_mult"])
    return torch.optim.AdamW(groups, lr=optim_cfg["lr"], betas=tuple(optim_cfg["betas"]))


def apply_schedules(optimizer: torch.optim.Optimizer, lr: float, weight_decay: float, freeze_last: bool) -> None:
    for group in optimizer.param_groups:
        group["lr"] = 0.0 if (freeze_last and group["is_last_layer"]) else lr * group["lr_mult"]
        group["weight_decay"] = weight_decay * group["wd_mult"]
