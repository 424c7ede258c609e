"""The pretraining job: a run folder in, a trained backbone out.

    prepare_run(cfg, manifest, run_dir)   writes config.yaml (resolved) and run.json (the manifest's sha256)
    train(run_dir)                        trains; continues from checkpoint.pt when there is one

A killed run is resumed by calling `train(run_dir)` again: same step, same batches, same loss
curve. Works alone or under torchrun (DDP, or FSDP2 with train.parallel=fsdp).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import random
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from catalog.figures import figure_png
from catalog.files import atomic_write
from training.backbone import backbone_depth, export_backbone
from training.centering import TeacherTargets
from training.checkpoint import clear_partial, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from training.config import PretrainConfig, dump_config, load_config
from training.data import TrainingError, check_manifest, build_stream, make_loader
from training.inputs import check_run_folder, run_manifest
from training.device_crops import DeviceCrops
from training.distributed import DistContext, all_mean, barrier, setup_distributed
from training.metrics import CollapseWatch, MetricsWriter, read_metrics
from training.model import build_ssl_models
from training.optim import build_optimizer
from training.schedules import build_schedules
from training.step import Learner, train_step

log = logging.getLogger("ortho.pretrain")
BACKBONE = "backbone.safetensors"


def prepare_run(cfg: PretrainConfig, manifest: str | Path, run_dir: Path, within: Path | None = None) -> dict:
    """Check the manifest, then write the run's identity: what it trains, on exactly which data. A manifest under
    `within` (the workspace) is kept relative to the run folder: a moved or copied workspace still resumes."""
    info = check_manifest(manifest, verify=cfg.train.verify_shards)
    if within is not None and Path(info.path).is_relative_to(Path(within).absolute()):
        info.path = os.path.relpath(info.path, Path(run_dir).absolute())
    run_dir.mkdir(parents=True, exist_ok=True)
    if (run_dir / "run.json").exists():
        raise TrainingError(f"run folder {run_dir} already holds a run: resume it with --resume {run_dir}")
    dump_config(cfg, run_dir / "config.yaml")
    run = {"run_id": run_dir.name, "created": dt.datetime.now(dt.timezone.utc).isoformat(),
           "manifest": info.path, "manifest_sha256": info.sha256, "shard_set": info.name, "samples": info.samples,
           "shards": info.shards, "catalog_snapshot": info.catalog_snapshot, "counts": info.counts,
           "versions": {"torch": torch.__version__, "timm": __import__("timm").__version__}}
    atomic_write(run_dir / "run.json", json.dumps(run, indent=2) + "\n")
    return run


def read_run(run_dir: Path, overrides: list[str] | tuple[str, ...] = ()) -> tuple[PretrainConfig, dict]:
    check_run_folder(run_dir)
    cfg = load_config(run_dir / "config.yaml", overrides)
    return cfg, json.loads((run_dir / "run.json").read_text())


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _precision(cfg: PretrainConfig, ctx: DistContext) -> torch.dtype | None:
    p = cfg.train.precision
    if p == "bf16" or (p == "auto" and ctx.device.type == "cuda"):
        return torch.bfloat16
    return None


def build_learner(cfg: PretrainConfig, ctx: DistContext) -> tuple[Learner, object]:
    student, teacher, report = build_ssl_models(cfg, cfg.crops.global_size)
    if cfg.train.grad_checkpointing:
        student.backbone.set_grad_checkpointing(True)
    student.to(ctx.device)
    teacher.to(ctx.device)
    depth = backbone_depth(student.backbone)
    wrapped: torch.nn.Module = student
    fsdp = ctx.world_size > 1 and cfg.train.parallel == "fsdp"
    if fsdp and student.spec.family != "vit":
        raise TrainingError("train.parallel=fsdp shards a ViT's blocks; use ddp for a CNN")
    if fsdp:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

        bf16 = _precision(cfg, ctx) is not None
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16 if bf16 else None,
                                      reduce_dtype=torch.float32 if bf16 else None)
        for model in (student, teacher):  # sharded alike, so the EMA runs shard by shard
            for block in model.backbone.blocks:
                fully_shard(block, mp_policy=policy)
            fully_shard(model, mp_policy=policy)
        register_fsdp_forward_method(teacher, "teacher_forward")
        # The outputs are views (CLS = tokens[:, 0]); nothing modifies them in place, so FSDP's warning is moot.
        warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view tensor")
    elif ctx.world_size > 1:
        wrapped = torch.nn.parallel.DistributedDataParallel(
            student, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    if cfg.train.compile:
        wrapped = torch.compile(wrapped)
    optimizer = build_optimizer(student, depth, cfg.optim)
    loss = cfg.loss
    learner = Learner(student=wrapped, student_module=student, teacher=teacher,
                      dino_targets=TeacherTargets(cfg.head.prototypes, loss.centering,
                                                  loss.center_momentum).to(ctx.device),
                      ibot_targets=TeacherTargets(cfg.head.ibot_k, loss.centering,
                                                  loss.center_momentum).to(ctx.device),
                      optimizer=optimizer, cfg=cfg, device=ctx.device, autocast_dtype=_precision(cfg, ctx), fsdp=fsdp,
                      crops=DeviceCrops(cfg.crops, student.spec.mean[0], student.spec.std[0], ctx.device)
                      if cfg.crops.device == "gpu" else None)
    return learner, report


def train(run_dir: str | Path, overrides: list[str] | tuple[str, ...] = (), show_progress: bool = True,
          until: int | None = None, verify_shards: bool | None = None) -> dict:
    """Train (or continue training) the run in `run_dir`; returns a summary of what it did.

    `until` pauses after that step with a checkpoint (time-sliced or preemptible jobs); calling
    train again continues exactly where it stopped. `verify_shards=False` skips the shard checksums
    (run_pretraining has just done them in prepare_run); the manifest's own sha256 is always checked."""
    run_dir = Path(run_dir)
    cfg, run = read_run(run_dir, overrides)
    if overrides:
        dump_config(cfg, run_dir / "config.yaml")
    t = cfg.train
    ctx = setup_distributed(t.device)
    verify = t.verify_shards if verify_shards is None else verify_shards
    manifest = run_manifest(run_dir, run)
    info = check_manifest(manifest, verify=verify and ctx.is_main)
    if info.sha256 != run["manifest_sha256"]:
        raise TrainingError(f"manifest {Path(manifest).name} changed since run {run['run_id']} started "
                            "(sha256 differs): start a new run")
    _seed_everything(t.seed)  # every rank builds the same initial weights (the teacher is never synced)
    learner, report = build_learner(cfg, ctx)
    _seed_everything(t.seed + ctx.rank)  # then each rank draws its own stochastic depth
    if report is not None and ctx.is_main:
        log.info("%s", report)
    spec = learner.student_module.spec
    stream = build_stream(cfg, manifest, spec.mean[0], spec.std[0], spec.patch_size if spec.family == "vit" else 1,
                          rank=ctx.rank, world_size=ctx.world_size, device=ctx.device)
    if not stream.decode and ctx.is_main:
        log.info("payloads are decoded on %s (crops.decode=%s)", ctx.device, cfg.crops.decode)
    schedules = build_schedules(cfg)
    position = {"step": 0, "epoch": 0, "step_in_epoch": 0}
    ckpt = load_checkpoint(run_dir)
    if ckpt is not None:
        learner.load_state_dict(ckpt["learner"])
        position = ckpt["position"]
        set_rng_state(ckpt["rng"][ctx.rank] if isinstance(ckpt["rng"], list) else ckpt["rng"])
    if ctx.is_main:
        clear_partial(run_dir)
    start_step = position["step"]
    metrics = MetricsWriter(run_dir, t.tensorboard, resume_step=start_step) if ctx.is_main else None
    watch = CollapseWatch(t.collapse_std, t.collapse_entropy, grace_steps=min(100, t.steps // 10),
                          patience=max(t.steps // 2, 1), max_entropy=t.collapse_uniform,
                          prototypes=cfg.head.prototypes, ibot_prototypes=cfg.head.ibot_k if cfg.ibot else None)
    try:
        summary = _loop(learner, stream, schedules, position, cfg, ctx, run_dir, metrics, watch, show_progress,
                        min(until or t.steps, t.steps))
    finally:
        if metrics is not None:
            metrics.close()
    backbone = learner.backbone_state()
    summary.update(run_id=run["run_id"], run_dir=str(run_dir), resumed_from=start_step,
                   manifest_sha256=run["manifest_sha256"],
                   teacher_checksum=float(sum(v.double().sum() for v in backbone.values())))
    if ctx.is_main and summary["steps"] >= t.steps:
        summary["backbone"] = str(export_backbone(backbone, learner.teacher.spec, run_dir / BACKBONE))
        _plot_losses(run_dir)
    barrier()
    return summary


def _save(learner: Learner, position: dict, schedules: dict, cfg: PretrainConfig, ctx: DistContext,
          run_dir: Path) -> None:
    rngs = _gather_rng(ctx)
    state = learner.state_dict() if (learner.fsdp or ctx.is_main) else None  # FSDP gathers on every rank
    if ctx.is_main:
        save_checkpoint(run_dir, {"learner": state, "position": dict(position), "rng": rngs,
                                  "schedules": schedules, "config": cfg.to_dict()})
    barrier()


def _gather_rng(ctx: DistContext):
    state = rng_state()
    if ctx.world_size == 1:
        return state
    out = [None] * ctx.world_size
    torch.distributed.all_gather_object(out, state)
    return out


def _loop(learner: Learner, stream, schedules: dict, position: dict, cfg: PretrainConfig, ctx: DistContext,
          run_dir: Path, metrics: MetricsWriter | None, watch: CollapseWatch, show_progress: bool, stop: int) -> dict:
    t = cfg.train
    steps, batch = t.steps, cfg.optim.batch_size
    progress = _Progress(steps, position["step"], enabled=show_progress and ctx.is_main)
    window_start, window_steps, last = time.perf_counter(), 0, {}
    learner.student.train()
    while position["step"] < stop:
        stream.set_epoch(position["epoch"], position["step_in_epoch"])
        for batch_data in make_loader(stream, t.num_workers, pin_memory=ctx.device.type == "cuda"):
            try:
                step = position["step"] + 1
                logged = step % t.log_every == 0 or step == steps
                values = train_step(learner, batch_data, position["step"], schedules, log=logged)
            except torch.OutOfMemoryError:
                raise TrainingError(
                    f"out of GPU memory at optim.batch_size={batch} per GPU (2 x {cfg.crops.global_size}px + "
                    f"{cfg.crops.local_crops} x {cfg.crops.local_size}px crops each): lower "
                    "optim.batch_size or set train.grad_checkpointing=true") from None
            position["step"] += 1
            position["step_in_epoch"] += 1
            window_steps += 1
            if logged:
                values = all_mean(values, ctx.device)
                elapsed = time.perf_counter() - window_start
                values["images_per_s"] = window_steps * batch * ctx.world_size / max(elapsed, 1e-9)
                if ctx.device.type == "cuda":
                    values["gpu_mem_gb"] = torch.cuda.max_memory_allocated(ctx.device) / 2**30
                values.update(step=step, epoch=position["epoch"])
                collapsed = watch.check(step, values)
                if collapsed:
                    values["collapse"] = collapsed  # in metrics.jsonl: read back by whoever launched the run
                if metrics is not None:
                    metrics.write(values)
                last = values
                window_start, window_steps = time.perf_counter(), 0
            progress.update(step, last)
            if step % t.checkpoint_every == 0 or step == stop:
                _save(learner, position, schedules, cfg, ctx, run_dir)
            if step >= stop:
                break
        else:
            position["epoch"] += 1
            position["step_in_epoch"] = 0
    progress.close()
    return {"steps": position["step"], "epochs": position["epoch"] + 1, "last": last,
            "collapse_warnings": sorted(watch.warned), "collapse": list(watch.warned.values())}


class _Progress:
    """A rich progress line: step, loss, images/s."""

    def __init__(self, total: int, start: int, enabled: bool):
        self.bar = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("pretrain"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                                TextColumn("{task.fields[info]}"), transient=False)
            self.task = self.bar.add_task("train", total=total, completed=start, info="")
            self.bar.start()

    def update(self, step: int, values: dict) -> None:
        if self.bar is None:
            return
        parts = " ".join(f"{k} {values[k]:.3f}" for k in ("dino", "ibot", "koleo") if k in values)
        info = f"loss {values['loss']:.3f} ({parts}) {values['images_per_s']:.1f} img/s" if values else ""
        self.bar.update(self.task, completed=step, info=info)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _plot_losses(run_dir: Path) -> None:
    rows = read_metrics(run_dir)
    if len(rows) < 2:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    steps = [r["step"] for r in rows]
    for key in ("loss", "dino", "ibot", "koleo", "gram"):
        if key in rows[-1]:
            axes[0].plot(steps, [r.get(key, np.nan) for r in rows], label=key)
    axes[0].set_xlabel("step")
    axes[0].legend()
    axes[0].set_title("losses")
    for key in ("teacher_batch_entropy", "teacher_entropy", "cls_std"):
        axes[1].plot(steps, [r[key] for r in rows], label=key)
    axes[1].set_xlabel("step")
    axes[1].legend()
    axes[1].set_title("collapse watch")
    fig.tight_layout()
    atomic_write(run_dir / "losses.png", figure_png(fig, dpi=100))
    plt.close(fig)


def run_pretraining(manifest: str | Path, config: str | Path | None, overrides: list[str] | tuple[str, ...],
                    run_dir: Path, show_progress: bool = True) -> dict:
    """A new run: resolve the config, write the run's identity, train."""
    cfg = load_config(config, overrides)
    prepare_run(cfg, manifest, run_dir)
    return train(run_dir, show_progress=show_progress, verify_shards=False)
