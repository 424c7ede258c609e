"""Task runners by name: threads and processes locally, Dask where prefect-dask is installed."""

from __future__ import annotations

import os


def build_task_runner(kind: str = "processes", workers: int | None = None):
    workers = workers or os.cpu_count() or 1
    if kind == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=workers)
    if kind == "processes":
        from prefect.task_runners import ProcessPoolTaskRunner

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
