"""Ctrl-C, `kill -TERM` and a closed terminal: every command ends within a few seconds, with one line and the exit
code a shell expects (130, 143, 129), and a second signal ends it at once.

A terminal sends Ctrl-C to its whole process group: the command, Prefect's temporary server and the task runner's
workers. Left alone, the server shuts down while the flow still reports to it (minutes of retries, hundreds of lines
of tracebacks) and every worker prints its own KeyboardInterrupt. So while a command runs, the three signals are
blocked in every thread and in every process it starts (a blocked mask is inherited), and one thread takes them
with sigwait: Prefect's own SIGTERM handler never runs, children never see the group's signal, and the command
decides. It stops the workers (finished work is recorded; a re-run continues, DESIGN.md principle 3), raises
`Interrupted` in the main thread so that runs are recorded as interrupted and locks released, and, should the
unwinding take longer than GRACE_S (a long C call, a hung client), prints the line and exits anyway.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterator

from catalog import errors
from catalog.errors import Interrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_POKE = signal.SIGUSR1  # how the signal thread interrupts the main thread, even in a blocking wait
GRACE_S = 4.0


class _State:
    signum: int | None = None
    raised = False
    printed = False
    terminal: int | None = None  # a copy of stderr, kept for the one line
    installed = False
    spared: set[int] = set()  # Prefect's server: the flow reports to it until the command stops it


state = _State()


def interrupted() -> int | None:
    """The signal that is ending this command, if one is."""
    return state.signum


def _note(signum: int) -> None:
    state.signum = errors.interrupting = signum


def message(signum: int) -> str:
    return (f"interrupted ({signal.Signals(signum).name}): finished work is kept; run the command again to continue")


def print_line(signum: int) -> None:
    """The one line, once: on the terminal the command started with (its output is silenced once a signal came)."""
    if state.printed:
        return
    state.printed = True
    if state.terminal is None:  # a KeyboardInterrupt raised in-process, not a signal: the usual console
        from flows.console import print_error

        print_error(message(signum))
        return
    tty = os.isatty(state.terminal)
    start, red, plain = ("\r\x1b[2K", "\x1b[31m", "\x1b[0m") if tty else ("", "", "")  # over a bar's last frame
    os.write(state.terminal, f"{start}{red}error:{plain} {message(signum)}\n".encode())


def stop_children(spare: bool = True) -> None:
    """Every process this command started (workers, torchrun, a Dask cluster), killed: their outputs are written
    under temporary names, so nothing half-written stays. `spare`: not the Prefect server yet."""
    try:
        import psutil

        children = psutil.Process().children(recursive=True)
    except Exception:  # noqa: BLE001  (no psutil, or a process gone while listed)
        return
    for child in children:
        if spare and child.pid in state.spared:
            continue
        with contextlib.suppress(Exception):
            child.kill()


def _exit_now(signum: int) -> None:
    _silence()
    print_line(signum)
    stop_children(spare=False)
    os._exit(128 + signum)


def finish(signum: int) -> None:
    """Where the command's error handler got the interrupt: the stack has unwound (runs recorded, locks released).
    After a signal the process ends here: what is left is the interpreter's exit, where Prefect's senders would
    wait on a stopped server."""
    print_line(signum)
    if state.terminal is not None:
        _exit_now(signum)


def _silence() -> None:
    """From here on the one line is the whole story: Prefect's crash reports, its failing API calls, warnings and
    the threads' tracebacks go nowhere, whatever stream they hold."""
    if state.terminal is not None:
        return
    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")
    threading.excepthook = lambda args: None
    sys.unraisablehook = lambda args: None
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    state.terminal = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.close(devnull)


def _on_poke(signum, frame) -> None:
    """In the main thread: the first signal becomes `Interrupted` there."""
    if state.signum is None or state.raised:
        return
    state.raised = True
    _silence()
    stop_children()
    raise Interrupted(state.signum)


def _on_signal(signum, frame) -> None:
    """In the main thread, should a signal arrive unblocked (a library that unblocked it): as the signal thread."""
    if state.signum is not None:
        _exit_now(signum)
    _note(signum)
    _start_timer(signum)
    _on_poke(signum, frame)


def _start_timer(signum: int) -> None:
    timer = threading.Timer(GRACE_S, _exit_now, (signum,))
    timer.daemon = True
    timer.start()


def _watch(stop: threading.Event, main_ident: int) -> None:
    while True:
        signum = signal.sigwait(SIGNALS)
        if stop.is_set():
            return
        if state.signum is not None:  # a second signal: now
            _exit_now(signum)
        _note(signum)
        _start_timer(signum)
        signal.pthread_kill(main_ident, _POKE)


def start_resource_tracker() -> None:
    """Before a process pool starts: multiprocessing starts its resource tracker with SIGINT and SIGTERM blocked and
    then unblocks them in the calling thread, whatever that thread had blocked; started here, the mask is put back."""
    from multiprocessing import resource_tracker

    # Its stderr is /dev/null: killed workers leave it semaphores to clean up, and it would say so on the terminal.
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        resource_tracker.ensure_running()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    if resource_tracker._resource_tracker._pid is not None:  # killed, it would be started again, and complain
        state.spared.add(resource_tracker._resource_tracker._pid)
    if state.installed and threading.current_thread() is threading.main_thread():
        signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)


@contextlib.contextmanager
def signals_handled() -> Iterator[None]:
    """Around a command, in the main thread (elsewhere, e.g. a test calling a command from a thread: nothing)."""
    if threading.current_thread() is not threading.main_thread() or state.installed:
        yield
        return
    state.signum, state.raised, state.printed, state.terminal = None, False, False, None
    errors.interrupting = None
    previous = {s: signal.signal(s, _on_signal) for s in SIGNALS} | {_POKE: signal.signal(_POKE, _on_poke)}
    previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    stop = threading.Event()
    watcher = threading.Thread(target=_watch, args=(stop, threading.get_ident()), name="ortho-signals", daemon=True)
    watcher.start()
    state.installed = True
    try:
        yield
    finally:
        if state.signum is None:  # a command that ends normally: the watcher ends, the signals are as they were
            stop.set()
            signal.pthread_kill(watcher.ident, signal.SIGHUP)
            watcher.join(1.0)
            signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
            for s, handler in previous.items():
                signal.signal(s, handler)
            state.installed = False
