"""DINO projection head: MLP -> L2-normalised bottleneck -> prototypes (unit-norm weight rows)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DINOHead(nn.Module):
    """x [B, in_dim] -> logits [B, prototypes].

    The prototype layer keeps unit-norm rows (weight normalisation with the gain fixed at 1, as in
    DINO), so logits are cosine similarities between the bottleneck and each prototype."""

    def __init__(self, in_dim: int, prototypes: int, hidden_dim: int = 2048, bottleneck_dim: int = 256,
                 layers: int = 3, batch_norm: bool = False):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (layers - 1) + [bottleneck_dim]
        mlp: list[nn.Module] = []
        for i in range(len(dims) - 1):
            mlp.append(nn.Linear(dims[i], dims[i + 1]))
            if i < len(dims) - 2:
                if batch_norm:  # DINO's use_bn_in_head: removes the component every image shares
                    mlp.append(nn.BatchNorm1d(dims[i + 1]))
                mlp.append(nn.GELU())
        self.mlp = nn.Sequential(*mlp)
        self.prototypes = nn.Linear(bottleneck_dim, prototypes, bias=False)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(self.mlp(x), dim=-1, eps=1e-6)
        return F.linear(x, F.normalize(self.prototypes.weight, dim=-1, eps=1e-6))
