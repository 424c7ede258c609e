"""DINO's CLS-token self-distillation loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dino_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, n_global: int,
              student_temp: float = 0.1) -> torch.Tensor:
    """Cross-entropy of every student crop against every teacher global crop but its own view.

    student_logits: [S * B, K], crop-major (crop 0 of every image, then crop 1, ...), the first
        `n_global` crops the global ones.
    teacher_probs: [n_global * B, K], already centred/sharpened (teacher temperature applied).
    Returns a scalar: the mean over images and over the (teacher, student) pairs used.
    """
    batch = teacher_probs.shape[0] // n_global
    s_logp = F.log_softmax(student_logits.float() / student_temp, dim=-1).chunk(student_logits.shape[0] // batch)
    t = teacher_probs.float().chunk(n_global)
    total, pairs = student_logits.new_zeros((), dtype=torch.float32), 0
    for i, t_i in enumerate(t):
        for j, s_j in enumerate(s_logp):
            if i == j:
                continue
            total = total - (t_i * s_j).sum(dim=-1).mean()
            pairs += 1
    return total / max(pairs, 1)
