"""iBOT's masked-patch self-distillation loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def ibot_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, masks: torch.Tensor,
              student_temp: float = 0.1) -> torch.Tensor:
    """The student predicts, at each masked patch, the teacher's distribution for the unmasked patch.

    student_logits: [M, K] for the M masked patches of the student's global crops, in the order
        of `masks.nonzero()`.
    teacher_probs: [M, K] for the same patches (teacher saw them unmasked), centred and sharpened.
    masks: [N_img, P] bool, the patches masked in each global-crop image.
    Each image weighs the same however many patches it masked: the loss is the mean over images
    that have masks of the mean over their masked patches. Returns 0 when nothing is masked.
    """
    per_image = masks.sum(dim=-1)
    n_images = int((per_image > 0).sum())
    if n_images == 0:
        return student_logits.new_zeros((), dtype=torch.float32)
    weights = (1.0 / per_image.clamp(min=1).float()).repeat_interleave(per_image)  # [M]
    ce = -(teacher_probs.float() * F.log_softmax(student_logits.float() / student_temp, dim=-1)).sum(dim=-1)
    return (ce * weights).sum() / n_images
