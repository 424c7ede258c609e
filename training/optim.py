"""The pretraining optimizer: AdamW over the backbone's layer-wise parameter groups (training/backbone.py)."""

from __future__ import annotations

import torch
from torch import nn

from training.backbone import param_groups
from training.config import OptimConfig


def build_optimizer(model: nn.Module, depth: int, optim: OptimConfig) -> torch.optim.AdamW:
    groups = param_groups(model, depth, optim.layer_decay, optim.patch_embed_lr_mult)
    return torch.optim.AdamW(groups, lr=optim.lr, betas=tuple(optim.betas))
