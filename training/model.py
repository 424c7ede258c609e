"""Student and teacher: a timm backbone (DINOv3 ViT or CNN) plus DINO/iBOT heads and iBOT's mask token.

Without iBOT (loss.ibot_weight = 0, as a CNN needs) there is no iBOT head and no mask token: parameters that never
get a gradient would stall DDP and waste optimizer state."""

from __future__ import annotations

import copy

import torch
from torch import nn

from training.backbone import BackboneSpec, build_backbone, forward_tokens
from training.config import ConfigError, HeadConfig, PretrainConfig
from training.head import DINOHead


class SSLModel(nn.Module):
    """backbone + dino_head (+ ibot_head unless shared, + mask_token, when `ibot`). The teacher is a deep copy."""

    def __init__(self, backbone: nn.Module, spec: BackboneSpec, head: HeadConfig, ibot: bool = True):
        super().__init__()
        self.backbone, self.spec = backbone, spec
        dim = spec.embed_dim
        shape = dict(hidden_dim=head.hidden_dim, bottleneck_dim=head.bottleneck_dim, layers=head.layers,
                     batch_norm=head.batch_norm)
        self.dino_head = DINOHead(dim, head.prototypes, **shape)
        self.ibot_head = self.mask_token = None
        if ibot:
            self.ibot_head = self.dino_head if head.shared else DINOHead(dim, head.ibot_prototypes, **shape)
            self.mask_token = nn.Parameter(torch.zeros(dim))

    def forward(self, global_crops: torch.Tensor, local_crops: torch.Tensor | None,
                masks: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """The student's pass over all crops.

        global_crops [G*B, C, H, W], local_crops [L*B, C, h, w] or None, masks [G*B, P] bool or None.
        Returns cls_logits [(G+L)*B, K] (crop-major), cls [G*B, D] (global crops, for KoLeo),
        masked_logits [M, K'] (masked patches, order of masks.nonzero()), patches [G*B, P, D].
        """
        cls, patches = forward_tokens(self.backbone, global_crops, masks, self.mask_token)
        all_cls = cls
        if local_crops is not None and local_crops.shape[0]:
            local_cls, _ = forward_tokens(self.backbone, local_crops)
            all_cls = torch.cat([cls, local_cls])
        out = {"cls_logits": self.dino_head(all_cls), "cls": cls, "patches": patches}
        out["masked_logits"] = self.ibot_head(patches[masks]) if masks is not None else patches.new_zeros(0, 1)
        return out

    @torch.no_grad()
    def teacher_forward(self, global_crops: torch.Tensor, masks: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """The teacher's pass: unmasked global crops only; logits for CLS and the masked positions."""
        cls, patches = forward_tokens(self.backbone, global_crops)
        out = {"cls_logits": self.dino_head(cls), "patches": patches}
        if masks is not None:
            out["masked_logits"] = self.ibot_head(patches[masks])
        return out


def build_ssl_models(cfg: PretrainConfig, img_size: int) -> tuple[SSLModel, SSLModel, object]:
    """(student, teacher, load report). Both start from the same weights; the teacher never gets gradients."""
    m = cfg.model
    backbone, spec, report = build_backbone(m.name, m.in_chans, img_size, m.init, m.drop_path, m.kwargs)
    if cfg.ibot and spec.family != "vit":
        raise ConfigError(f"iBOT's masked-token loss needs a ViT; {m.name} is a CNN: set loss.ibot_weight=0")
    student = SSLModel(backbone, spec, cfg.head, cfg.ibot)
    teacher = copy.deepcopy(student)
    teacher.requires_grad_(False)
    teacher.eval()  # no stochastic depth in the teacher
    # ...but batch statistics in its batch norms (a CNN's; ViTs have none), as DINO's teacher: normalising with the
    # running statistics would leave the component every image shares in its features and pin its targets to
    # uniform. Its running statistics follow its own batches, so the exported backbone is ready for inference.
    for module in teacher.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.train()
    return student, teacher, report
