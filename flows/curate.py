"""Prefect flow for curation: a task per batch of new signatures, then the global passes."""

from __future__ import annotations

from collections import deque
from functools import partial
from typing import Iterable, Iterator

import flows  # noqa: F401  (Prefect defaults)
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from catalog.workspace import Workspace
from curation.crops import CropConfig
from curation.near_dup import DedupConfig
from curation.run import CurateConfig, curate, write_signature_part
from flows import progress
from flows.firewall import firewall
from flows.runners import build_task_runner
from ingest.run import new_run_id

@task(name="signatures", retries=1, cache_policy=NO_CACHE, persist_result=False)
@firewall("signatures")
def signature_task(workspace: str, rows: list[tuple[str, int, bool, bool]], part: str) -> int:
    """Signatures and keypoints of one batch of (image_id, bits, needs a signature, needs keypoints)."""
    return write_signature_part(Workspace.open(workspace), part, [tuple(r) for r in rows])


def prefect_map(max_in_flight: int):
    def run(ws: Workspace, batches: Iterable[list]) -> Iterator[int]:
        pending: deque = deque()
        prefix = new_run_id()
        for i, batch in enumerate(batches):
            rows = [(str(r[0]), int(r[1]), bool(r[2]), bool(r[3])) for r in batch]
            pending.append(signature_task.submit(str(ws.root), rows, f"{prefix}-{i:06d}"))
            while len(pending) >= max_in_flight:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    return run


@flow(name="curate", log_prints=False)
@firewall("curate")
def curate_flow(workspace: str, runner: str = "processes", workers: int | None = None, wait_s: float = 0.0,
                crops: bool = True) -> dict:
    ws = Workspace.open(workspace)
    config = CurateConfig(dedup=DedupConfig(crops=CropConfig(enabled=crops)))
    summary = curate(ws, config, map_signatures=prefect_map(2 * (workers or 2) + 1),
                     on_progress=partial(progress.report, "curate"), wait_s=wait_s)
    return summary.__dict__


def run_curate(workspace: str, runner: str = "processes", workers: int | None = None, wait_s: float = 0.0,
               crops: bool = True) -> dict:
    """`crops=False` skips the crop search (and computing keypoints for new images)."""
    return curate_flow.with_options(task_runner=build_task_runner(runner, workers))(workspace, runner, workers, wait_s,
                                                                                    crops)
