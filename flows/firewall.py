"""What flows and tasks may raise: an exception's message can hold a path or a value, and Prefect stores what a
flow or task raises as its state message and logs it with a traceback (its `log` table, a shared server's UI).

So every flow and task body is wrapped in `firewall(stage)`: the project's own errors (OrthoError: messages written for
users) pass, chains cut; anything else becomes a ScrubbedError that names the stage and the exception's type only.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import traceback

from catalog import errors
from catalog.errors import InternalError, OrthoError


class ScrubbedError(InternalError, RuntimeError):
    """An unexpected error, reduced to the stage and the exception's type name."""

    def __init__(self, message: str, io_error: bool = False):
        super().__init__(message)
        self.io_error = io_error  # an OSError underneath: worth a retry


def is_curated(e: BaseException) -> bool:
    return isinstance(e, OrthoError)


def scrubbed(stage: str, e: Exception) -> Exception:
    """`e` itself when curated (its chain cut: a cause's text would print with it), else a ScrubbedError."""
    if is_curated(e):
        e.__cause__ = e.__context__ = None
        return e
    return ScrubbedError(f"{stage} failed: internal_error ({type(e).__name__})", io_error=isinstance(e, OSError))


def one_line(e: Exception) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0]}" if is_curated(e) and str(e) else type(e).__name__


def frames_only(e: BaseException) -> str:
    """A traceback without any exception's text: where it happened, never what it said."""
    return "".join(traceback.format_tb(e.__traceback__)) + one_line(e)


def firewall(stage: str):
    def wrap(fn):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as e:
                if errors.interrupting is not None:  # the interrupt, as a library wrapped it on its way up
                    raise errors.Interrupted(errors.interrupting) from None
                error = scrubbed(stage, e)
                if error is e:
                    raise
            # Raised outside the except block: no __context__ keeps the original alive or printable.
            raise error from None

        # Prefect validates a flow's parameters against its signature, resolving names in the wrapper's module (this
        # one): the annotations are resolved here, in the flow's own module, where its settings classes are named.
        with contextlib.suppress(NameError):
            run.__signature__ = inspect.signature(fn, eval_str=True)
        return run

    return wrap


class CuratedTracebacks(logging.Filter):
    """Prefect logs every failed flow and task run with its traceback. For a user's error the one-line message it
    logs with it is the whole story (the command line prints it again, alone, as it exits); an internal error keeps
    its frames, which hold no text once scrubbed."""

    def filter(self, record: logging.LogRecord) -> bool:
        e = record.exc_info[1] if record.exc_info else None
        if is_curated(e) and not isinstance(e, InternalError):
            record.exc_info = record.exc_text = None
        return True


def quiet_curated_tracebacks() -> None:
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, CuratedTracebacks) for f in logger.filters):
            logger.addFilter(CuratedTracebacks())
