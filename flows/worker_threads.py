"""One native thread per worker process.

A `processes` (or local Dask) task runner starts a worker per core, and each worker's native libraries (OpenBLAS,
MKL, OpenMP) would start a thread pool of their own, a thread per core. The pools then spin against the other
workers' for the same cores: a 128 x 128 matmul of curation's signatures took 34 ms instead of 0.4, and curating
300 knees took a third more CPU with the pools left at their size (docs/benchmarks.md, "Native threads in worker
processes"). So a worker process keeps one thread in each pool. The command's own process (a `threads` runner's
tasks, training, a single-process run) keeps the libraries' defaults, and a Ray worker is started by Ray, which
sets its own thread counts.
"""

from __future__ import annotations

import multiprocessing
import os

_limited_in: int | None = None  # the process that limited its pools (a forked worker inherits the flag, not the pools)


def one_native_thread_in_workers() -> bool:
    """In a worker process: every native thread pool loaded so far limited to one thread. Whether it is one."""
    global _limited_in
    if multiprocessing.parent_process() is None:
        return False
    if _limited_in != os.getpid():
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1)
        _limited_in = os.getpid()
    return True
