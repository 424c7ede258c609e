"""Task runners by name (threads and processes locally, Dask or Ray where installed), and the one way flows map a
task over many inputs."""

from __future__ import annotations

import os
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, TypeVar

if TYPE_CHECKING:
    from prefect.futures import PrefectFuture

T = TypeVar("T")


def build_task_runner(kind: str = "processes", workers: int | None = None):
    workers = workers or os.cpu_count() or 1
    if kind == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=workers)
    if kind == "processes":
        from prefect.task_runners import ProcessPoolTaskRunner

        from flows.interrupt import start_resource_tracker

        start_resource_tracker()  # now, while the command's signals can be blocked again (flows/interrupt.py)
        return ProcessPoolTaskRunner(max_workers=workers)
    if kind == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError:
            raise SystemExit("the dask runner needs prefect-dask: pip install prefect-dask") from None
        return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1})
    if kind == "ray":
        try:
            from prefect_ray import RayTaskRunner
        except ImportError:
            raise SystemExit("the ray runner needs prefect-ray: pip install prefect-ray") from None
        return RayTaskRunner()
    raise SystemExit(f"unknown task runner {kind!r}: threads, processes, dask or ray")


def prefect_map(submit: Callable[[T], PrefectFuture], items: Iterable[T],
                max_in_flight: int | None = None) -> Iterator[Any]:
    """`submit` (a task's .submit over one item) for every item, the results in order; at most `max_in_flight`
    futures pending (None: all submitted at once), so a long listing streams instead of piling up."""
    pending: deque = deque()
    for item in items:
        pending.append(submit(item))
        while max_in_flight is not None and len(pending) >= max_in_flight:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()
