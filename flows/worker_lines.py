"""Warning lines of worker processes, printed by the command that owns the terminal.

A `processes` task runner's workers share the command's terminal: a line they print goes straight over its progress
bars (rich draws the bars and the lines above them only for what the command itself prints). So in a worker the
project's WARNING lines stay off the console, travel back with the task's result, and the command logs them again:
its console handler prints them above the bars. The worker still writes them to the workspace's log file and to
Prefect's log; the command's log file leaves the relayed copy out (the record is there once).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
from collections.abc import Iterator

log = logging.getLogger("ortho")
RELAYED = "ortho_relayed"  # the attribute a relayed record carries


class _Collect(logging.Handler):
    def __init__(self, lines: list[str]):
        super().__init__(logging.WARNING)
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextlib.contextmanager
def held_for_the_command() -> Iterator[list[str]]:
    """Around a task's work: the WARNING lines it logged, when it ran in a worker process (in the command's own
    process they were printed where they belong, and the list stays empty)."""
    lines: list[str] = []
    if multiprocessing.parent_process() is None:
        yield lines
        return
    handler, propagate = _Collect(lines), log.propagate
    log.addHandler(handler)
    log.propagate = False  # the worker's console handler sits on the root logger
    try:
        yield lines
    finally:
        log.removeHandler(handler)
        log.propagate = propagate


def print_relayed(lines: list[str], logger: logging.Logger = log) -> None:
    """In the command's process: each line through its console handler, above the bars."""
    for line in lines:
        logger.warning("%s", line, extra={RELAYED: True})


def not_relayed(record: logging.LogRecord) -> bool:
    """A log file's filter: a relayed line was written to the file by the worker that logged it."""
    return not getattr(record, RELAYED, False)
