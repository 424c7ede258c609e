"""Prefect flow for curation: a task per batch of new signatures, then the global passes."""

from __future__ import annotations

from functools import partial
from typing import Iterable, Iterator

import flows  # noqa: F401  (Prefect defaults)
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from catalog.ids import new_run_id
from catalog.workspace import Workspace
from curation.dedup.config import CropConfig, DedupConfig
from curation.run import CurateConfig, curate, resolve_config, write_signature_part
from flows import progress, settings
from flows.firewall import firewall
from flows.runners import RunnerConfig, prefect_map
from flows.worker_lines import held_for_the_command, print_relayed


@task(name="signatures", retries=1, cache_policy=NO_CACHE, persist_result=False)
@firewall("signatures")
def signature_task(workspace: str, rows: list[tuple[str, int, bool, bool]], part: str,
                   runtime: dict | None = None) -> dict:
    """Signatures and keypoints of one batch of (image_id, bits, needs a signature, needs keypoints); `runtime`: the
    flow's settings (flows/settings.py). Its count, and the WARNING lines a worker process held for the command."""
    settings.apply_task_settings(runtime)
    with held_for_the_command() as lines:
        count = write_signature_part(Workspace.open(workspace), part, [tuple(r) for r in rows])
    return {"count": count, "lines": lines}


def map_signatures(max_in_flight: int):
    """A task per batch of new signatures, at most `max_in_flight` pending; each writes its own part."""

    def run(ws: Workspace, batches: Iterable[list]) -> Iterator[int]:
        prefix = new_run_id()
        parts = ((f"{prefix}-{i:06d}", batch) for i, batch in enumerate(batches))
        for done in prefect_map(partial(_submit_part, str(ws.root)), parts, max_in_flight):
            print_relayed(done["lines"])
            yield done["count"]

    return run


def _submit_part(workspace: str, part: tuple[str, list]):
    name, batch = part
    rows = [(str(r[0]), int(r[1]), bool(r[2]), bool(r[3])) for r in batch]
    return signature_task.submit(workspace, rows, name, settings.current().as_dict())


@flow(name="curate", log_prints=False)
@firewall("curate")
def curate_flow(workspace: str, config: CurateConfig | None = None, runner: RunnerConfig = RunnerConfig(),
                wait_s: float = 0.0, full: bool = False) -> dict:
    """`config`: the curation settings (None: CurateConfig's defaults; `curate_config` resolves the command line's);
    `runner`: where the signature tasks run, as the flow's task runner was built (`run_curate`); `full`: search every
    image against every image and rebuild the saved searches (default: only the images new since the last curation
    are queried, curation/dedup/incremental.py). The settings are plain values: Prefect records them as the run's
    parameters, which hold nothing identifying."""
    ws = Workspace.open(workspace)
    summary = curate(ws, config or CurateConfig(), map_signatures=map_signatures(runner.max_in_flight),
                     on_progress=partial(progress.report, "curate"), wait_s=wait_s, full=full)
    return summary.__dict__


def curate_config(overrides: list[str] | None = None, crops: bool | None = None) -> CurateConfig:
    """The curation settings: defaults <- `--crops/--no-crops` (None: the default's) <- `key=value` overrides
    (`dedup.threshold=0.7`)."""
    base = None if crops is None else CurateConfig(dedup=DedupConfig(crops=CropConfig(enabled=crops)))
    return resolve_config(list(overrides or []), base=base)


def run_curate(workspace: str, config: CurateConfig | None = None, runner: RunnerConfig = RunnerConfig(),
               wait_s: float = 0.0, full: bool = False) -> dict:
    """`curate_flow` on `runner`'s task runner (its `address`: a running Dask scheduler or Ray cluster that computes
    the signatures; the search stays here). `config.dedup.crops.enabled=False` skips the crop search (and computing
    keypoints for new images)."""
    return curate_flow.with_options(task_runner=runner.build())(workspace, config, runner, wait_s, full)
