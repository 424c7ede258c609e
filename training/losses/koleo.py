"""KoLeo regulariser (Kozachenko-Leonenko entropy estimator), as in DINOv2."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def koleo_loss(features: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """-mean_i log(distance from x_i to its nearest neighbour), on L2-normalised features.

    features: [B, D] (the student's CLS embeddings of one global crop), B >= 2.
    Spreading features apart lowers it; two identical rows make it large (log eps).
    """
    x = F.normalize(features.float(), dim=-1, eps=eps)
    sim = x @ x.T
    sim.fill_diagonal_(-2.0)  # never one's own neighbour
    nearest = sim.argmax(dim=1)
    dist = (x - x[nearest]).norm(dim=-1)
    return -torch.log(dist + eps).mean()
