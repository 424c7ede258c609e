"""The settings `ortho` takes from the environment, read once, here (docs/pipeline.md, "Settings from the
environment"), and handed to the library as arguments: the process-wide ones through the ground floor's
`configure` functions, an ingest run's limits and compaction threshold as `ingest_source` arguments.

`flows/__init__.py` calls `load()` when flows/ is first imported. Tasks also get `current().as_dict()` as an
argument and `apply_task_settings` it before they run, so a worker follows the flow that submitted it, whatever
its own environment holds (Dask or Ray workers on other hosts). A variable that is not set leaves the library's
default, which lives in the library alone.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Mapping

from catalog.errors import OrthoError
from flows.worker_threads import one_native_thread_in_workers

# variable -> field; the types come from the fields
VARIABLES = {
    "ORTHO_FSYNC": "fsync",
    "ORTHO_DUCKDB_MEMORY": "duckdb_memory",
    "ORTHO_MAX_FILE_BYTES": "max_file_bytes",
    "ORTHO_MAX_DECODED_BYTES": "max_decoded_bytes",
    "ORTHO_MAX_PIXELS": "max_pixels_per_image",
    "ORTHO_COMPACT_PARTS": "compact_parts",
}
_INTS = ("max_file_bytes", "max_decoded_bytes", "max_pixels_per_image", "compact_parts")
_LIMITS = ("max_file_bytes", "max_decoded_bytes", "max_pixels_per_image")


class SettingsError(OrthoError, ValueError):
    """An ORTHO_* variable that cannot be read."""


@dataclass(frozen=True)
class RuntimeSettings:
    """None: not set, the library's default applies."""

    fsync: bool | None = None  # catalog.files: fsync after atomic writes ("0" turns it off)
    duckdb_memory: str | None = None  # catalog.db: DuckDB memory_limit of every connection
    max_file_bytes: int | None = None  # ingest Limits
    max_decoded_bytes: int | None = None
    max_pixels_per_image: int | None = None
    compact_parts: int | None = None  # ingest_source: compact past this many batch parts

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> "RuntimeSettings":
        environ = os.environ if environ is None else environ
        values: dict = {}
        for variable, name in VARIABLES.items():
            if variable not in environ:
                continue
            text = environ[variable]
            if name == "fsync":
                values[name] = text != "0"
            elif name in _INTS:
                try:
                    values[name] = int(text)
                except ValueError:
                    raise SettingsError(f"{variable} is {text!r}, not a whole number") from None
            else:
                values[name] = text
        return cls(**values)

    def as_dict(self) -> dict:
        return asdict(self)

    def apply(self) -> None:
        """The process-wide settings: fsync and DuckDB's memory limit."""
        from catalog import files, pixel_budget

        files.configure(fsync=self.fsync)
        pixel_budget.configure(self.limits())
        if self.duckdb_memory is not None:
            from catalog import db  # imports duckdb: only when there is something to set

            db.configure(memory_limit=self.duckdb_memory)

    def limits(self):
        """The pixel budget every stage reads pixels under (catalog/pixel_budget.py)."""
        from catalog.pixel_budget import Limits

        return Limits(**{k: getattr(self, k) for k in _LIMITS if getattr(self, k) is not None})

    def ingest_options(self) -> dict:
        """Keyword arguments of `ingest.run.ingest_source`: the read limits and the compaction threshold."""
        options: dict = {"limits": self.limits()}
        if self.compact_parts is not None:
            options["compact_parts"] = self.compact_parts
        return options


_current = RuntimeSettings()


_unreadable: SettingsError | None = None  # raised where a command runs (one line), not at import (a traceback)


def load(environ: Mapping[str, str] | None = None) -> RuntimeSettings:
    """Read the environment and apply what it sets: once per process, when flows/ is imported."""
    global _current, _unreadable
    try:
        _current, _unreadable = RuntimeSettings.from_environ(environ), None
    except SettingsError as e:
        _current, _unreadable = RuntimeSettings(), e
    _current.apply()
    return _current


def current() -> RuntimeSettings:
    """The settings this process runs with (what `load` or the last task's settings set)."""
    if _unreadable is not None:
        raise _unreadable
    return _current


def apply_task_settings(settings: dict | None) -> None:
    """In a task, before its work: the submitting flow's settings (None: keep this process's own); in a worker
    process, one thread in each native thread pool (flows/worker_threads.py)."""
    global _current
    one_native_thread_in_workers()
    if settings is None:
        return
    _current = RuntimeSettings(**settings)
    _current.apply()
