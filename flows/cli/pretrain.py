"""`ortho pretrain`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from flows.cli.common import WorkspaceOpt, console, fail, open_workspace, setup_logging
from flows.server import one_prefect_server


def pretrain(
    overrides: Annotated[Optional[list[str]], typer.Argument(help="Config overrides, key=value (optim.lr=2e-4)")] = None,
    manifest: Optional[Path] = typer.Option(None, help="Shard set manifest.json to train on"),
    config: Optional[Path] = typer.Option(None, help="Config YAML (e.g. configs/pretrain/vits16.yaml)"),
    resume: Optional[Path] = typer.Option(None, help="Continue the run in this folder (after a kill, or --until)"),
    run_dir: Optional[Path] = typer.Option(None, help="Run folder [default: WORKSPACE/runs/<run_id>]"),
    nproc: int = typer.Option(1, help="Processes (GPUs) on this machine; >1 launches torchrun"),
    launcher: str = typer.Option("local", help="local, or a command template with {command} (sbatch, ...)"),
    until: Optional[int] = typer.Option(None, help="Pause after this step with a checkpoint"),
    workspace: WorkspaceOpt = None,
) -> None:
    """Self-supervised pretraining (DINOv3-style) of a timm ViT, streamed from a shard manifest."""
    ws = open_workspace(workspace)
    setup_logging(ws, "pretrain")
    if not resume and not manifest:
        fail("give --manifest (a new run) or --resume RUN_DIR")
    check_pretrain(manifest, config, list(overrides or []), resume)  # a typo: one line, before a flow starts
    from flows.pretrain import pretrain_flow

    with one_prefect_server():
        summary = pretrain_flow(str(ws.root), manifest=str(manifest) if manifest else None,
                                config=str(config) if config else None, overrides=list(overrides or []),
                                resume=str(resume) if resume else None, run_dir=str(run_dir) if run_dir else None,
                                nproc=nproc, launcher=launcher, until=until)
    print_pretrain_summary(summary)


def check_pretrain(manifest: Optional[Path], config: Optional[Path], overrides: list[str],
                   resume: Optional[Path]) -> None:
    """The run folder to resume, or the config, its overrides and the manifest (its shards present; their checksums
    are verified in the run)."""
    from training.config import load_config
    from training.inputs import check_manifest, check_run_folder

    if resume:
        check_run_folder(resume)
        load_config(resume / "config.yaml", overrides)
        return
    load_config(str(config) if config else None, overrides)
    check_manifest(manifest, verify=False)


def print_pretrain_summary(s: dict) -> None:
    if "submitted" in s:
        console.print(f"submitted run {s['run_id']}: {s['submitted']}")
        return
    run_dir = Path(s["run_dir"])
    t = Table("", "", title=f"pretraining run {s['run_id']}")
    t.add_row("run folder", str(run_dir))
    t.add_row("steps", str(s.get("steps")))
    if s.get("loss") is not None:
        t.add_row("last loss", f"{s['loss']:.4f}")
    last = s.get("last") or {}
    for key in ("dino", "ibot", "koleo", "gram", "images_per_s", "teacher_batch_entropy", "cls_std"):
        if key in last:
            t.add_row(key, f"{last[key]:.4g}")
    t.add_row("backbone", str(run_dir / "backbone.safetensors") if s.get("completed") else
              f"not yet: continue with ortho pretrain --resume {run_dir}")
    if (run_dir / "losses.png").exists():
        t.add_row("loss curves", str(run_dir / "losses.png"))
    console.print(t)
    for message in s.get("collapse") or []:
        console.print(f"[bold red]collapsed:[/] {escape(message)}", highlight=False)
    if s.get("collapse"):
        console.print("the backbone of a collapsed run is not worth evaluating: fewer prototypes (head.prototypes), "
                      "loss.centering=sinkhorn, a larger optim.batch_size or a lower optim.lr (docs/training.md)")
