"""`ortho curate`."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table

from flows.cli.common import (WorkspaceOpt, console, open_workspace, progress_bars, setting, setup_logging,
                               wait_option)
from flows.runners import RunnerConfig
from flows.server import one_prefect_server

METHOD_NAMES = {"embedding": "the global signature", "embedding_flip": "the mirrored signature",
                "crop": "the crop search", "crop_flip": "the mirrored crop search"}
FULL_REASONS = {"requested": "--full", "no_index": "first curation", "index_unreadable": "saved search unreadable",
                "index_inconsistent": "saved search incomplete", "settings_changed": "a dedup setting changed",
                "features_changed": "keypoints of a new version", "images_removed": "images left the catalog",
                "images_changed": "an image's laterality or series changed",
                "search_mode_changed": "a search passed exact_below", "index_outgrown": "an IVF index outgrown"}


def curate(
    overrides: Annotated[Optional[list[str]], typer.Argument(
        help="Settings, key=value (dedup.threshold=0.7, quality.min_size=128); saved with the run")] = None,
    runner: str = setting(RunnerConfig, "runner", help="Task runner: threads, processes, dask or ray"),
    workers: Optional[int] = setting(RunnerConfig, "workers", help="Parallel workers [default: CPU count]"),
    address: Optional[str] = setting(RunnerConfig, "address", help="A running cluster to use: tcp://HOST:PORT "
                                     "(--runner dask) or HOST:PORT (--runner ray) [default: start a local one]"),
    wait: float = wait_option(),
    crops: Optional[bool] = typer.Option(None, "--crops/--no-crops", show_default=False,
                                         help="Also search for cropped re-exports (local features; docs/catalog.md) "
                                              "(default: as the setting dedup.crops.enabled says)"),
    full: bool = typer.Option(False, "--full",
                              help="Search every image against every image and rebuild the saved searches "
                                   "(default: only images new since the last curation are queried)"),
    workspace: WorkspaceOpt = None,
) -> None:
    """Near-duplicates, quality flags, patient-level splits and the leakage guard, incrementally."""
    from flows import curate as curate_flows

    ws = open_workspace(workspace)
    setup_logging(ws, "curate")
    config = curate_flows.curate_config(list(overrides or []), crops)  # a typo: one line, before a flow starts
    tasks = RunnerConfig(runner, workers, address)
    with one_prefect_server(), progress_bars(transient=False) as bars:
        bars.update("signatures")
        bars.hook("curate", lambda stage, done, total: bars.update("signatures", done, total))
        summary = curate_flows.run_curate(str(ws.root), config, tasks, wait_s=wait, full=full)
    print_curate_summary(summary)


def print_curate_summary(s: dict) -> None:
    if not s["images"]:
        console.print("the catalog holds no images yet: nothing to curate (run `ortho ingest` first)")
        return
    t = Table("", "images", title="curation")
    for label, value in (("images in the catalog", s["images"]), ("new signatures", s["new_signatures"]),
                         ("new patients given a split", s["new_patients"]), ("near-duplicate groups", s["dup_groups"]),
                         ("near-duplicates (not representative)", s["near_duplicates"]),
                         *((f"  images matched by {METHOD_NAMES.get(m, m)}", n) for m, n in s.get("matched_by", {}).items()),
                         ("excluded from training selections", s["excluded"]),
                         ("val/test images (held out from training by design)", s.get("held_out_by_design", 0)),
                         ("training images held out by the leakage guard", s["leakage_removed"])):
        t.add_row(label, str(value))
    console.print(t)
    if line := search_line(s.get("search") or {}):
        console.print(line)
    c = s.get("crop_search") or {}
    if c.get("descriptors"):
        console.print(f"crop search: {c['votes']:,} descriptor matches -> {c['candidates']:,} candidate pairs -> "
                      f"{c['transforms']:,} aligned -> {c['verified']:,} verified crops")
    tq = Table("quality flag", "images", title="quality (flags; `ortho sql \"SELECT * FROM quality\"`)")
    for reason, n in s["quality"].items():
        tq.add_row(reason, str(n))
    console.print(tq)
    ts = Table("split", "images", title="patient-level splits")
    for split, n in s["splits"].items():
        ts.add_row(str(split), str(n))
    console.print(ts)


def search_line(search: dict) -> str:
    """How the near-duplicate search ran: incremental (how many new images asked) or full (and why)."""
    if not search:
        return ""
    if search["mode"] == "incremental":
        return (f"near-duplicate search: incremental, {search['queried']:,} new images queried against "
                f"{search['indexed']:,}")
    why = FULL_REASONS.get(search["reason"], search["reason"])
    return f"near-duplicate search: full ({why}), {search['queried']:,} images"
