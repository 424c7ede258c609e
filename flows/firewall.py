"""What flows and tasks may raise: an exception's message can hold a path or a value, and Prefect stores what a
flow or task raises as its state message and logs it with a traceback (its `log` table, a shared server's UI).

So every flow and task body is wrapped in `firewall(stage)`: the project's own errors (messages written for users)
pass, chains cut; anything else becomes a ScrubbedError that names the stage and the exception's type only.
"""

from __future__ import annotations

import functools
import traceback

# By qualified name, so that this module imports none of them (training's pulls in torch).
CURATED = {
    "catalog.workspace.WorkspaceBusy",
    "ingest.scan.SourceUnavailable",
    "ingest.sources.SourceError",
    "flows.pipeline.PipelineError",
    "shards.select.SelectionError",
    "shards.writer.ShardError",
    "training.backbone.CheckpointError",
    "training.config.ConfigError",
    "training.data.TrainingError",
    "evaluation.data.EvaluationError",
    "flows.firewall.ScrubbedError",
}


class ScrubbedError(RuntimeError):
    """An unexpected error, reduced to the stage and the exception's type name."""

    def __init__(self, message: str, io_error: bool = False):
        super().__init__(message)
        self.io_error = io_error  # an OSError underneath: worth a retry


def is_curated(e: BaseException) -> bool:
    return any(f"{c.__module__}.{c.__qualname__}" in CURATED for c in type(e).__mro__)


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
                error = scrubbed(stage, e)
                if error is e:
                    raise
            # Raised outside the except block: no __context__ keeps the original alive or printable.
            raise error from None

        return run

    return wrap
