"""What every `ortho` command shares: the consoles, the --workspace option, logging, the progress bars, the root
group (its commands built on first use) and the one error handler.

Nothing here imports rich at import time: `ortho sql --format csv` never draws, and rich costs ~0.15 s to import.
`console` and `err` are made when a module first takes them."""

from __future__ import annotations

import contextlib
import importlib
import logging
import signal
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Callable, ClassVar, Iterator, NoReturn, Optional

import typer
from typer.core import TyperCommand, TyperGroup

from catalog.errors import OrthoError
from catalog.workspace import Workspace
from flows import interrupt
from flows.console import consoles as _consoles
from flows.console import print_error
from flows import progress as progress_hooks
from flows import settings
from flows.worker_lines import not_relayed

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, ProgressColumn


def __getattr__(name: str):
    """`console` (stdout) and `err` (stderr), rich consoles made on first use."""
    if name in ("console", "err"):
        return _consoles()[name == "err"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


WorkspaceOpt = Annotated[Optional[Path], typer.Option("--workspace", "-w", envvar="ORTHO_WORKSPACE",
                                                      help="Workspace folder [default: ./workspace]")]


def wait_option() -> typer.models.OptionInfo:
    """--wait SECONDS of every command that writes to the workspace (catalog/workspace.py `write_lock`)."""
    return typer.Option(0.0, "--wait", help="Seconds to wait for another process writing to the workspace")


def setting(cls: type, key: str, *decls: str, **kw) -> typer.models.OptionInfo:
    """A Typer option that fills the field `key` (dotted: `finetune.epochs`) of the stage's settings `cls`; its
    default is the field's, so it is written once, in the dataclass. A list shows as the comma-separated text the
    option takes; an empty one stays a list, the default of a repeatable option (`--labels`). `fills` tells
    tests/flows/test_cli_settings.py which field the option is."""
    from catalog.config import default_of

    default = default_of(cls, key)
    if isinstance(default, (list, tuple)):
        default = ",".join(map(str, default)) if default else []
    info = typer.Option(default, *decls, **kw)
    info.fills = (cls, key)
    return info


def open_workspace(path: Optional[Path]) -> Workspace:
    return Workspace.open(path)


def fail(message: str) -> NoReturn:
    """A user's mistake found by the command line itself: the one error handler prints it."""
    raise OrthoError(message)


def cell(value) -> "Text":
    """A table cell as plain text: a value that holds `[bold]` or `:x:` is shown as it is, never as markup or emoji."""
    from rich.text import Text

    return Text("" if value is None else str(value))


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    """The project's errors (messages written for users) end a command with `error: MESSAGE` on stderr and the
    error's exit code; anything else is a bug and keeps its traceback."""
    try:
        yield
    except (KeyboardInterrupt, Exception) as e:
        if interrupt.interrupted() or isinstance(e, KeyboardInterrupt):  # finished work is kept; a re-run continues
            signum = interrupt.interrupted() or signal.SIGINT
            interrupt.finish(signum)
            raise typer.Exit(128 + signum) from None
        if not isinstance(e, OrthoError):
            raise
        print_error(str(e))
        raise typer.Exit(e.exit_code) from None


class OrthoGroup(TyperGroup):
    """The root command group: every command and sub-command runs inside its invoke, so inside the one handler.
    Its commands are `loaders` (flows/cli/__init__.py declares them), each built when it is first looked up, so a
    command imports only its own module: `ortho sql` does not import Prefect, torch or the readers."""

    loaders: ClassVar[dict[str, Callable[[], TyperCommand | TyperGroup]]] = {}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.commands = LazyCommands(self.loaders, self.commands)

    def invoke(self, ctx):
        with interrupt.signals_handled(), one_line_errors():
            settings.current()  # an unreadable ORTHO_* variable stops every command here, in one line
            return super().invoke(ctx)


class LazyCommands(MutableMapping):
    """name -> click command, in declaration order; a command is built (its module imported) when first read."""

    def __init__(self, loaders: dict[str, Callable], built: dict | None = None):
        self._loaders = dict(loaders)
        self._built = dict(built or {})

    def __getitem__(self, name: str):
        if name not in self._built:
            self._built[name] = self._loaders[name]()  # KeyError for an unknown name, as a dict's
        return self._built[name]

    def __setitem__(self, name: str, command) -> None:
        self._built[name] = command

    def __delitem__(self, name: str) -> None:
        self._loaders.pop(name, None)
        self._built.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter({**dict.fromkeys(self._loaders), **dict.fromkeys(self._built)})

    def __len__(self) -> int:
        return len({*self._loaders, *self._built})


def lazy_command(name: str, module: str, function: str) -> Callable[[], TyperCommand | TyperGroup]:
    """A loader of the command `name`: flows.cli.<module>.<function>, as typer builds it."""
    def build():
        app = typer.Typer(add_completion=False)
        app.command(name)(getattr(importlib.import_module(f"flows.cli.{module}"), function))
        return typer.main.get_command(app)
    return build


def lazy_group(name: str, help: str, commands: dict[str, tuple[str, str]]) -> Callable[[], TyperCommand | TyperGroup]:
    """A loader of the sub-group `name`: command -> (module, function) as in `lazy_command`."""
    def build():
        group = typer.Typer(name=name, help=help, no_args_is_help=True, add_completion=False)
        for command, (module, function) in commands.items():
            group.command(command)(getattr(importlib.import_module(f"flows.cli.{module}"), function))
        return typer.main.get_group(group)
    return build


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
    path = ws.log_path(name)
    fh = logging.FileHandler(path)
    fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    fh.setLevel(logging.INFO)
    fh.addFilter(not_relayed)  # written to the file by the worker process that logged it (flows/worker_lines.py)
    log.addHandler(fh)
    ch = CurrentStderrHandler()
    ch.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    ch.setLevel(logging.WARNING)
    log.addHandler(ch)
    log.propagate = False
    return path


class CurrentStderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record comes: while progress bars are drawn, rich's proxy, which
    prints the line above the bars instead of over them."""

    def __init__(self):
        super().__init__()

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


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
def progress_bars(*, console: Console | None = None, transient: bool = True, middle: tuple[ProgressColumn, ...] = (),
                  tail: tuple[ProgressColumn, ...] = ()) -> Iterator[Bars]:
    """Bars as `name [bar] done/total <middle> elapsed <tail>` on `console` (default: stderr); the hooks installed
    through them are removed on the way out, whatever happens."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = console or _consoles()[1]
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), *middle,
               TimeElapsedColumn(), *tail)
    with Progress(*columns, console=console, transient=transient) as progress:
        bars = Bars(progress)
        try:
            yield bars
        finally:
            for name in bars.hooked:
                progress_hooks.hooks.pop(name, None)
