"""A worker process keeps one thread in each native thread pool (flows/worker_threads.py); the command's own process
keeps the libraries' defaults."""

import multiprocessing
import os

import pytest
from threadpoolctl import threadpool_info

from flows import settings


def _pools() -> dict[str, int]:
    import numpy  # noqa: F401  (its BLAS library, loaded)

    return {p["filepath"]: p["num_threads"] for p in threadpool_info()}


def _pools_around_a_task() -> tuple[dict[str, int], dict[str, int]]:
    before = _pools()
    settings.apply_task_settings(None)
    return before, _pools()


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: a pool has one thread anyway")
def test_a_worker_process_runs_its_tasks_with_one_native_thread(monkeypatch):
    for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(variable, str(os.cpu_count()))  # a thread per core, as a worker starts without the limit
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        before, after = pool.apply(_pools_around_a_task)
    assert before and min(before.values()) > 1
    assert set(after) == set(before) and set(after.values()) == {1}


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: a pool has one thread anyway")
def test_the_commands_own_process_keeps_its_pools():
    from threadpoolctl import threadpool_limits

    _pools()  # numpy's BLAS loaded, so that the limit below reaches it
    # tests/conftest.py starts every test process with one thread per pool: a thread per core, as a command starts
    # with, so that a limit to one would show
    with threadpool_limits(limits=os.cpu_count()):
        before, after = _pools_around_a_task()
    assert before and min(before.values()) > 1
    assert after == before
