"""`ortho evaluate` and `ortho report` (an evaluation's, or with `curation` the curation report)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import TextColumn
from rich.table import Table
from rich.text import Text

from catalog.config import default_of
from evaluation.config import EvalConfig
from flows.cli.common import (WorkspaceOpt, console, fail, open_workspace, progress_bars, setting, setup_logging,
                               split_csv)


def evaluate(
    overrides: Annotated[Optional[list[str]], typer.Argument(
        help="Settings over the options, key=value (linear_cs=[0.1,1.0], finetune.weight_decay=0.05)")] = None,
    checkpoint: Path = typer.Option(..., help="backbone.safetensors of a run, a run folder, or (with --model) "
                                              "any local timm/DINOv3 checkpoint"),
    task: Annotated[list[str], typer.Option(help="Task name(s), repeated or comma-separated (ortho tasks list)")] = ...,
    protocol: str = setting(EvalConfig, "protocols", help="linear, knn, finetune (comma-separated)"),
    label_fractions: str = setting(EvalConfig, "fractions",
                                   help="Fractions of training patients, e.g. 0.125,0.25,0.5,1.0"),
    baseline: Annotated[Optional[list[str]], typer.Option(
        help="random, supervised (a CNN trained from random init, supervised.model=regnetx_002; with finetune also the "
             "ViT from random init), pixels, or a local checkpoint (ARCH=PATH for non-exported files); repeatable; "
             f"none given: {','.join(default_of(EvalConfig, 'baselines'))}")] = None,
    seeds: int = setting(EvalConfig, "seeds", help="Seeds per label fraction (label subset, init, fine-tuning order)"),
    model: Optional[str] = typer.Option(None, help="Architecture of --checkpoint when it is not an exported backbone"),
    pool: str = setting(EvalConfig, "pool", help="Frozen features: cls, mean (of patch tokens) or both"),
    knn_k: str = setting(EvalConfig, "knn_ks", help="kNN k values; the best on val is used"),
    epochs: int = setting(EvalConfig, "finetune.epochs", help="Fine-tuning epochs (the supervised ViT gets the same "
                          "budget; the supervised CNN has its own: supervised.epochs=N)"),
    finetune_lr: float = setting(EvalConfig, "finetune.lr",
                                 help="Fine-tuning learning rate of the head (layer-wise decay below)"),
    finetune_blocks: int = setting(EvalConfig, "finetune.blocks", help="Fine-tune only the last N blocks (-1: all)"),
    exam_aggregation: str = setting(EvalConfig, "exam_aggregation",
                                    help="Slices -> exam for exam-level tasks: mean or max"),
    bootstrap: int = setting(EvalConfig, "n_boot", help="Bootstrap draws over patients for the 95% CIs"),
    shards: Optional[Path] = typer.Option(None, help="Read images and labels from this shard set's manifest "
                                                     "(built with --evaluation) instead of the store"),
    eval_id: Optional[str] = typer.Option(None, help="Name of the evaluation [default: eval-<time>]"),
    report: bool = typer.Option(True, help="Render evals/<eval_id>/report.html"),
    workspace: WorkspaceOpt = None,
) -> None:
    """Evaluate a checkpoint on downstream tasks: kNN, linear probe, fine-tuning, label efficiency, baselines."""
    from evaluation.inputs import check_files, check_tasks

    ws = open_workspace(workspace)
    baselines = split_csv(baseline) if baseline is not None else list(default_of(EvalConfig, "baselines"))
    check_files(checkpoint, baselines, model, shards)  # a missing file or a misspelled task: one line, before torch
    if shards is None:  # with a shard set the labels travel in its shards
        check_tasks(ws, split_csv(task))
    from evaluation.run import check_inputs
    from flows.evaluate import eval_config, evaluate_flow
    from flows.server import one_prefect_server

    setup_logging(ws, "evaluate")
    settings = dict(protocols=split_csv([protocol]), fractions=_numbers(label_fractions, float), seeds=seeds,
                    baselines=baselines, pool=pool, knn_ks=tuple(_numbers(knn_k, int)),
                    exam_aggregation=exam_aggregation, n_boot=bootstrap,
                    finetune=dict(epochs=epochs, lr=finetune_lr, blocks=finetune_blocks))
    cfg = eval_config(settings, overrides)  # a typo fails here, in one line, before a flow starts
    check_inputs(ws, checkpoint, split_csv(task), cfg, model, shards)
    with one_prefect_server(), progress_bars(console=console, tail=(TextColumn("{task.fields[label]}"),)) as bars:
        bars.update("evaluate", label="starting: the orchestrator, the tasks, the checkpoint")
        bars.hook("evaluate", lambda done, total, label: bars.update("evaluate", done, total, label=label))
        summary = evaluate_flow(str(ws.root), str(checkpoint), split_csv(task), cfg, eval_id=eval_id,
                                model_name=model, report=report, shards=str(shards) if shards else None)
    print_eval_summary(Path(summary["eval_dir"]))
    if summary["report"]:
        console.print(f"report: {summary['report']}")


def _numbers(text: str, kind) -> list:
    try:
        return split_csv([text], kind)
    except ValueError as e:
        fail(f"not a number: {e}")


def print_eval_summary(eval_dir: Path) -> None:
    from evaluation.report import METRIC_NAMES, model_order, group_results, seed_summary

    doc = json.loads((eval_dir / "metrics.json").read_text())
    for reason, n in (doc.get("data", {}).get("unreadable") or {}).items():
        console.print(Text(f"{n} labelled image(s) left out: the store could not give them ({reason})", style="yellow"))
    for t in doc["tasks"]:
        metric = t["primary_metric"]
        sp = t["splits"]["test"]
        unit = "exams" if t["level"] == "exam" else "images"
        table = Table("model", "protocol", METRIC_NAMES[metric] + " [95% CI]", "accuracy", "seeds",
                      title=f"{t['task']} on test ({t.get('test_units', sp['images'])} {unit}, {sp['patients']} "
                            "patients), 100% labels" + (" [smoke run]" if t.get("smoke") else ""))
        groups = group_results(doc["results"], t["task"])
        for (model_name, proto), by_f in sorted(groups.items(), key=lambda kv: (model_order(kv[0][0]), kv[0][1])):
            if 1.0 not in by_f:
                continue
            m, lo, hi, *_, n = seed_summary(by_f[1.0], metric)
            acc = seed_summary(by_f[1.0], "accuracy")[0]
            value = f"{m:.3f} [{lo:.3f}, {hi:.3f}]" if m == m else "undefined"
            table.add_row(model_name, proto, value, f"{acc:.3f}", str(n))
        console.print(table)
        for note in t.get("notes", []):
            console.print(Text(f"{t['task']}: {note}", style="yellow"))
        if sum(c > 0 for c in t.get("test_classes", [1, 1])) < 2 and not t.get("smoke"):
            console.print(f"[yellow]{t['task']}: the test part holds a single class; "
                          f"{METRIC_NAMES[metric]} is undefined there[/yellow]")


def report(target: Path = typer.Argument(..., help="`curation` for the curation report, or an evaluation: "
                                                   "workspace/evals/<eval_id>, or an eval_id of the workspace"),
           run: Optional[str] = typer.Option(None, "--run", help="curation: the run to report (default: the "
                                                                 "current one)"),
           out: Optional[Path] = typer.Option(None, "--out", help="curation: the folder to write to "
                                                                  "(default: workspace/reports)"),
           workspace: WorkspaceOpt = None) -> None:
    """Render a report: `ortho report curation` (a curation run's decisions as one self-contained HTML page), or
    `ortho report EVAL` (an evaluation's report.html, self-contained, PNG plots beside it)."""
    if str(target) == "curation" and not (target / "metrics.json").is_file():
        from catalog.workspace import Workspace, resolve_workspace
        from curation.report import write_curation_report

        path = write_curation_report(Workspace(resolve_workspace(workspace)), run, out)
        console.print(f"curation report: {path}", soft_wrap=True, markup=False)
        return
    if run is not None or out is not None:
        fail("--run and --out belong to `ortho report curation`")
    from evaluation.report import write_report

    from catalog.workspace import Workspace, resolve_workspace

    eval_dir = _eval_dir(target, workspace)
    print_eval_summary(eval_dir)
    # thumbnails: the workspace named, else the one the folder lies in, else the default one (a copied report)
    ws = (workspace is None and Workspace.of_eval(eval_dir)) or Workspace(resolve_workspace(workspace))
    console.print(f"report: {write_report(eval_dir, ws)}")


def _eval_dir(eval_dir: Path, workspace: Optional[Path]) -> Path:
    """An evaluation folder, or the id of one of the workspace's evaluations (looked up, nothing created)."""
    if not (eval_dir / "metrics.json").is_file() and len(eval_dir.parts) == 1:
        from catalog.workspace import Workspace, resolve_workspace

        named = Workspace(resolve_workspace(workspace)).evals_dir / eval_dir.name
        if (named / "metrics.json").is_file():
            return named
    if not (eval_dir / "metrics.json").is_file():
        fail(f"{eval_dir} holds no metrics.json: give an evaluation folder (workspace/evals/<eval_id>)")
    return eval_dir
