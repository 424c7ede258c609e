"""Task runners by name (threads and processes locally, Dask or Ray where installed, a local cluster or one already
running at `address`), and the one way flows map a task over many inputs."""

from __future__ import annotations

import os
import re
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, TypeVar

from catalog.errors import OrthoError

if TYPE_CHECKING:
    from prefect.futures import PrefectFuture

T = TypeVar("T")

# what each cluster runner's --address looks like: a Dask scheduler's comm address, a Ray head's GCS address
# (HOST:PORT) or its Ray Client address (ray://HOST:PORT)
ADDRESS_FORMS = {"dask": (re.compile(r"^(tcp|tls|ucx|inproc)://[^\s/]+$"), "tcp://HOST:PORT"),
                 "ray": (re.compile(r"^(ray://)?[A-Za-z0-9.\-\[\]:]+:\d+$"), "HOST:PORT or ray://HOST:PORT")}


class RunnerError(OrthoError, ValueError):
    """A runner or cluster address that cannot work; one line."""


def check_address(kind: str, address: str | None) -> str | None:
    """`address` if `kind` can attach to it (None: start a local cluster), else a RunnerError, before any flow."""
    if address is None:
        return None
    if kind not in ADDRESS_FORMS:
        raise RunnerError(f"--address attaches to a running cluster: it needs --runner dask or ray, not {kind}")
    pattern, form = ADDRESS_FORMS[kind]
    if not pattern.match(address):
        raise RunnerError(f"--address {address!r}: a {kind} address looks like {form}")
    return address


@dataclass(frozen=True)
class RunnerConfig:
    """Where a stage's tasks run: the settings of --runner/--workers/--address and of a pipeline file's stage."""

    runner: str = "processes"  # threads, processes, dask or ray
    workers: int | None = None  # parallel workers; None: the CPU count (a cluster at `address`: its own workers)
    address: str | None = None  # a running Dask scheduler or Ray cluster; None: start a local one

    def __post_init__(self):
        check_address(self.runner, self.address)  # one line, before any flow

    def build(self):
        return build_task_runner(self.runner, self.workers, self.address)

    @property
    def max_in_flight(self) -> int:
        """Tasks a flow keeps pending at once (prefect_map): enough to keep every worker busy while results are
        collected, few enough that a long listing streams (two workers assumed when the count is the CPU's)."""
        return 2 * (self.workers or 2) + 1


SHARDS_RUNNER = RunnerConfig(runner="threads")  # a shard set has few, large shards, written by threads


def build_task_runner(kind: str = RunnerConfig.runner, workers: int | None = RunnerConfig.workers,
                      address: str | None = RunnerConfig.address):
    """`address`: a running Dask scheduler or Ray cluster to submit to (its workers, not `workers`, set the
    parallelism); None starts a local one of `workers` processes."""
    address = check_address(kind, address)
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
            raise RunnerError("the dask runner needs prefect-dask: pip install 'orthofoundation[dask]'") from None
        if address:
            return DaskTaskRunner(address=address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1})
    if kind == "ray":
        try:
            from prefect_ray import RayTaskRunner
        except ImportError:
            raise RunnerError("the ray runner needs prefect-ray: pip install 'orthofoundation[ray]'") from None
        return RayTaskRunner(address=address) if address else RayTaskRunner()
    raise RunnerError(f"unknown task runner {kind!r}: threads, processes, dask or ray")


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
