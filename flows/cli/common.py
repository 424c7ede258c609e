"""What every `ortho` command shares: the consoles, the --workspace option, logging, the progress bars and the one
error handler."""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path
from typing import Annotated, Callable, Iterator, NoReturn, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
from rich.text import Text
from typer.core import TyperGroup

from catalog.errors import OrthoError
from catalog.workspace import Workspace
from flows import progress as progress_hooks
from flows import settings

console = Console()
err = Console(stderr=True)

WorkspaceOpt = Annotated[Optional[Path], typer.Option("--workspace", "-w", envvar="ORTHO_WORKSPACE",
                                                      help="Workspace folder [default: ./workspace]")]


def open_workspace(path: Optional[Path]) -> Workspace:
    return Workspace.open(path)


def fail(message: str) -> NoReturn:
    """A user's mistake found by the command line itself: the one error handler prints it."""
    raise OrthoError(message)


def print_error(message: str) -> None:
    # Text, not markup: a message may hold brackets; soft_wrap: one line, never wrapped.
    err.print(Text.assemble(("error:", "red"), " ", message), soft_wrap=True)


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    """The project's errors (messages written for users) end a command with `error: MESSAGE` on stderr and the
    error's exit code; anything else is a bug and keeps its traceback."""
    try:
        yield
    except OrthoError as e:
        print_error(str(e))
        raise typer.Exit(e.exit_code) from None
    except KeyboardInterrupt:  # finished work is kept; a re-run continues where this one stopped
        print_error("interrupted")
        raise typer.Exit(130) from None


class OrthoGroup(TyperGroup):
    """The root command group: every command and sub-command runs inside its invoke, so inside the one handler."""

    def invoke(self, ctx):
        with one_line_errors():
            settings.current()  # an unreadable ORTHO_* variable stops every command here, in one line
            return super().invoke(ctx)


def split_csv(values: Optional[list[str]], cast=str) -> list:
    """Repeated options and comma-separated lists alike: --task a --task b,c -> [a, b, c]."""
    out = []
    for v in values or []:
        out += [cast(x.strip()) for x in str(v).split(",") if x.strip()]
    return out


def setup_logging(ws: Workspace, name: str) -> Path:
    """Warnings to the console (one line each, file ids only) and everything to workspace/logs."""
    log = logging.getLogger("ortho")
    log.setLevel(logging.INFO)
    for h in list(log.handlers):
        log.removeHandler(h)
    path = ws.logs_dir / f"{name}.log"
    fh = logging.FileHandler(path)
    fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    fh.setLevel(logging.INFO)
    log.addHandler(fh)
    ch = logging.StreamHandler(sys.stderr)
    ch.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    ch.setLevel(logging.WARNING)
    log.addHandler(ch)
    log.propagate = False
    return path


class Bars:
    """Named progress bars, each added on its first update, fed by the flows' progress hooks (flows/progress.py)."""

    def __init__(self, progress: Progress):
        self._progress = progress
        self._ids: dict[str, int] = {}
        self.hooked: list[str] = []

    def update(self, name: str, done=None, total=None, **fields) -> None:
        if name not in self._ids:
            self._ids[name] = self._progress.add_task(name, total=None, **fields)
        self._progress.update(self._ids[name], completed=done, total=total, **fields)

    def hook(self, name: str, fn: Callable[..., None]) -> None:
        progress_hooks.hooks[name] = fn
        self.hooked.append(name)


@contextlib.contextmanager
def progress_bars(*, console: Console = err, transient: bool = True, middle: tuple[ProgressColumn, ...] = (),
                  tail: tuple[ProgressColumn, ...] = ()) -> Iterator[Bars]:
    """Bars as `name [bar] done/total <middle> elapsed <tail>`; the hooks installed through them are removed on
    the way out, whatever happens."""
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), *middle,
               TimeElapsedColumn(), *tail)
    with Progress(*columns, console=console, transient=transient) as progress:
        bars = Bars(progress)
        try:
            yield bars
        finally:
            for name in bars.hooked:
                progress_hooks.hooks.pop(name, None)
