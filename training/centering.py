"""Turning teacher logits into targets: centring + sharpening (DINO) or Sinkhorn-Knopp (DINOv2/v3).

Both are distributed-aware: the centre and the Sinkhorn marginals are over the global batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


def _all_reduce(x: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(x)
    return x


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class TeacherTargets(torch.nn.Module):
    """logits [N, K] -> target probabilities [N, K]; `center` is a buffer saved in checkpoints."""

    def __init__(self, prototypes: int, mode: str = "center", momentum: float = 0.9, sinkhorn_iters: int = 3):
        super().__init__()
        self.mode, self.momentum, self.iters = mode, momentum, sinkhorn_iters
        self.register_buffer("center", torch.zeros(1, prototypes))

    @torch.no_grad()
    def forward(self, logits: torch.Tensor, temp: float) -> torch.Tensor:
        logits = logits.float()
        if self.mode == "sinkhorn":
            return sinkhorn_knopp(logits, temp, self.iters)
        probs = F.softmax((logits - self.center) / temp, dim=-1)
        self._update_center(logits)
        return probs

    @torch.no_grad()
    def _update_center(self, logits: torch.Tensor) -> None:
        total = _all_reduce(logits.sum(dim=0, keepdim=True))
        count = _all_reduce(torch.tensor([logits.shape[0]], device=logits.device, dtype=torch.float32))
        self.center.mul_(self.momentum).add_(total / count, alpha=1 - self.momentum)


@torch.no_grad()
def sinkhorn_knopp(logits: torch.Tensor, temp: float, iters: int = 3) -> torch.Tensor:
    """Equipartition across prototypes: rows (samples) sum to 1, columns to N/K over all ranks.

    logits: [N, K] on this rank. Returns [N, K] probabilities (each row sums to 1)."""
    top = logits.max().float()
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(top, op=dist.ReduceOp.MAX)  # one shift for every rank: it then cancels out
    q = torch.exp((logits.float() - top) / temp).T  # [K, N]
    n = torch.tensor([q.shape[1]], device=q.device, dtype=torch.float32)
    n = _all_reduce(n)
    k = q.shape[0]
    q /= _all_reduce(q.sum())
    for _ in range(iters):
        q /= _all_reduce(q.sum(dim=1, keepdim=True))
        q /= k
        q /= q.sum(dim=0, keepdim=True)
        q /= n
    return (q * n).T
