"""DINOv3's Gram anchoring: keep the patch-to-patch similarity structure of an earlier teacher."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gram_loss(student_patches: torch.Tensor, anchor_patches: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between the Gram matrices of L2-normalised patch features.

    student_patches: [B, N, D] the student's output patch tokens of its global crops.
    anchor_patches: [B, N, D] the Gram teacher's patch tokens of the same crops.
    Returns a scalar: the mean over images and over the N x N entries.
    """
    s = F.normalize(student_patches.float(), dim=-1)
    a = F.normalize(anchor_patches.float(), dim=-1)
    return (s @ s.transpose(1, 2) - a @ a.transpose(1, 2)).pow(2).mean()
