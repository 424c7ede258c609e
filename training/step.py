"""One DINOv3-style training step: teacher targets, student losses, update, EMA."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from training.backbone import apply_schedules, forward_tokens
from training.centering import TeacherTargets
from training.config import PretrainConfig
from training.device_crops import DeviceCrops
from training.losses import dino_loss, gram_loss, ibot_loss, koleo_loss
from training.metrics import collapse_stats
from training.model import SSLModel


@dataclass
class Learner:
    """The modules and state a step touches; `student` may be DDP-wrapped, `student_module` never is."""

    student: nn.Module
    student_module: SSLModel
    teacher: SSLModel
    dino_targets: TeacherTargets
    ibot_targets: TeacherTargets
    optimizer: torch.optim.Optimizer
    cfg: PretrainConfig
    device: torch.device
    autocast_dtype: torch.dtype | None = None
    gram_anchor: nn.Module | None = None
    fsdp: bool = False
    crops: DeviceCrops | None = None  # crops.device=gpu: cuts the batch's crops on `device` before the step

    def __post_init__(self):
        s = dict(self.student_module.named_parameters())
        t = dict(self.teacher.named_parameters())
        self.pairs = [(s[n], t[n]) for n in s if n in t]

    def state_dict(self) -> dict:
        """Full (unsharded) tensors; under FSDP every rank must call it (it gathers)."""
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                                 get_optimizer_state_dict)

            opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
            models = {"student": get_model_state_dict(self.student_module, options=opts),
                      "teacher": get_model_state_dict(self.teacher, options=opts),
                      "optimizer": get_optimizer_state_dict(self.student_module, self.optimizer, options=opts)}
        else:
            models = {"student": self.student_module.state_dict(), "teacher": self.teacher.state_dict(),
                      "optimizer": self.optimizer.state_dict()}
        return {**models, "dino_targets": self.dino_targets.state_dict(),
                "ibot_targets": self.ibot_targets.state_dict(),
                "gram_anchor": self.gram_anchor.state_dict() if self.gram_anchor is not None else None}

    def load_state_dict(self, state: dict) -> None:
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                                 set_optimizer_state_dict)

            opts = StateDictOptions(full_state_dict=True)
            set_model_state_dict(self.student_module, state["student"], options=opts)
            set_model_state_dict(self.teacher, state["teacher"], options=opts)
            set_optimizer_state_dict(self.student_module, self.optimizer, state["optimizer"], options=opts)
        else:
            self.student_module.load_state_dict(state["student"])
            self.teacher.load_state_dict(state["teacher"])
            self.optimizer.load_state_dict(state["optimizer"])
        self.dino_targets.load_state_dict(state["dino_targets"])
        self.ibot_targets.load_state_dict(state["ibot_targets"])
        if state.get("gram_anchor") is not None:
            self.refresh_gram_anchor()
            self.gram_anchor.load_state_dict(state["gram_anchor"])

    def refresh_gram_anchor(self) -> None:
        self.gram_anchor = copy.deepcopy(self.teacher.backbone).requires_grad_(False).eval()

    def backbone_state(self) -> dict:
        """The teacher's backbone, full tensors (gathers under FSDP: call on every rank)."""
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            state = get_model_state_dict(self.teacher, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        else:
            state = self.teacher.state_dict()
        return {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        # Under FSDP both are sharded the same way: the EMA runs on each rank's local shards.
        student = [_local(s.detach()) for s, _ in self.pairs]
        teacher = [_local(t) for _, t in self.pairs]
        torch._foreach_mul_(teacher, momentum)
        torch._foreach_add_(teacher, student, alpha=1 - momentum)


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t


def _scalar(t: torch.Tensor) -> float:
    return float(t.full_tensor() if hasattr(t, "full_tensor") else t)


def train_step(learner: Learner, batch: dict, step: int, schedules: dict, log: bool = True) -> dict[str, float]:
    """Forward, losses, backward, clip, optimizer step, EMA. Returns the values to log when `log`
    (reading them waits for the GPU, so steps that are not logged return {} and never wait)."""
    cfg, dev = learner.cfg, learner.device
    loss_cfg, optim_cfg = cfg.loss, cfg.optim
    if learner.crops is not None:
        batch = learner.crops(batch)
    glob = batch["global"].to(dev, non_blocking=True)
    local = batch["local"].to(dev, non_blocking=True) if batch["local"] is not None else None
    ibot = learner.student_module.ibot_head is not None
    masks = batch["masks"].to(dev, non_blocking=True) if ibot else None
    temp = float(schedules["teacher_temp"][step])
    gram_on = loss_cfg.gram_weight > 0 and step >= loss_cfg.gram_start
    if gram_on and (learner.gram_anchor is None or (step - loss_cfg.gram_start) % loss_cfg.gram_refresh == 0):
        learner.refresh_gram_anchor()
    apply_schedules(learner.optimizer, float(schedules["lr"][step]), float(schedules["weight_decay"][step]),
                    freeze_last=step < optim_cfg.freeze_last_layer_steps)

    with torch.autocast(dev.type, dtype=learner.autocast_dtype or torch.float32,
                        enabled=learner.autocast_dtype is not None):
        with torch.no_grad():
            t_out = learner.teacher.teacher_forward(glob, masks)
            t_cls = learner.dino_targets(t_out["cls_logits"], temp)
            t_patch = learner.ibot_targets(t_out["masked_logits"], temp) if ibot else None
            anchor = forward_tokens(learner.gram_anchor, glob)[1] if gram_on else None
        s_out = learner.student(glob, local, masks)
    n_global = 2
    losses = {"dino": dino_loss(s_out["cls_logits"], t_cls, n_global, loss_cfg.student_temp)}
    if ibot:
        losses["ibot"] = ibot_loss(s_out["masked_logits"], t_patch, masks, loss_cfg.student_temp)
    losses["koleo"] = sum(koleo_loss(c) for c in s_out["cls"].chunk(n_global)) / n_global
    if gram_on:
        losses["gram"] = gram_loss(s_out["patches"], anchor)
    total = sum(loss_cfg.weight(name) * value for name, value in losses.items())

    learner.optimizer.zero_grad(set_to_none=True)
    total.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(learner.student.parameters(), optim_cfg.clip_grad or float("inf"))
    learner.optimizer.step()
    momentum = float(schedules["momentum"][step])
    learner.update_teacher(momentum)

    if not log:
        return {}
    out = {"loss": float(total.detach()), **{k: float(v.detach()) for k, v in losses.items()}, "grad_norm": _scalar(grad_norm),
           "lr": float(schedules["lr"][step]), "weight_decay": float(schedules["weight_decay"][step]),
           "momentum": momentum, "teacher_temp": temp}
    out.update(collapse_stats(t_cls, s_out["cls"]))
    return out
