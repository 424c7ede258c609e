"""The pretraining optimizer: AdamW over the backbone's layer-wise parameter groups (training/backbone.py)."""

from __future__ import annotations

import torch
from torch import nn

from training.backbone import param_groups


def build_optimizer(model: nn.Module, depth: int, optim_cfg: dict) -> torch.optim.AdamW:
    groups = param_groups(model, depth, optim_cfg["layer_decay"], optim_cfg["patch_embed_lr_mult"])
    return torch.optim.AdamW(groups, lr=optim_cfg["lr"], betas=tuple(optim_cfg["betas"]))
