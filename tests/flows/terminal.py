"""An `ortho` command in a pseudo-terminal, as a user runs it: its own session and process group (its Prefect server
and workers in it too), and a signal sent to the whole group, as a terminal sends Ctrl-C or a closed window SIGHUP."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ORTHO = [sys.executable, "-c", "from flows.cli import app; app(prog_name='ortho')"]


@dataclass
class Ended:
    code: int
    output: str  # what the terminal showed, escape sequences and all
    after_signal_s: float  # from the signal to the command's exit
    group_gone: bool  # no process of its group left (the workers), nor any it had started (the server: its own session)


def _read(fd: int, timeout: float) -> bytes:
    ready, _, _ = select.select([fd], [], [], timeout)
    if not ready:
        return b""
    try:
        return os.read(fd, 65536)
    except OSError:  # the terminal closed: every writer has exited
        return b""


def _group_alive(pgid: int) -> list[int]:
    """The live (not zombie) processes of the group."""
    import psutil

    alive = []
    for p in psutil.process_iter(["status"]):
        try:
            if os.getpgid(p.pid) == pgid and p.info["status"] != psutil.STATUS_ZOMBIE:
                alive.append(p.pid)
        except (ProcessLookupError, PermissionError):
            pass
    return alive


def _descendants(pid: int) -> list:
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _alive(processes: list) -> list:
    import psutil

    alive = []
    for p in processes:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
        except psutil.NoSuchProcess:
            pass
    return alive


def _command_line(process) -> str:
    import psutil

    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


def _start(args: list[str], env: dict, ready, start_timeout: float) -> tuple[subprocess.Popen, int, bytes]:
    """The command in a new pseudo-terminal, once its output shows `ready`: (process, the terminal's fd, output)."""
    main, sub = os.openpty()
    proc = subprocess.Popen([*ORTHO, *args], stdin=sub, stdout=sub, stderr=sub, env=env, start_new_session=True,
                            cwd=Path(__file__).resolve().parents[2])
    os.close(sub)
    out = b""
    deadline = time.monotonic() + start_timeout
    is_ready = ready if callable(ready) else (lambda text: ready in text)
    while not is_ready(out.decode(errors="replace")):
        if proc.poll() is not None or time.monotonic() > deadline:
            _end(proc, [], main)
            raise AssertionError(f"not ready (exit {proc.poll()}): {out.decode(errors='replace')[-3000:]}")
        out += _read(main, 0.2)
    return proc, main, out


def _end(proc: subprocess.Popen, started: list, main: int) -> None:
    """Whatever the command left behind, killed: never a later test's problem."""
    for p in [proc.pid, *[c.pid for c in _alive(started)]]:
        try:
            os.killpg(p, signal.SIGKILL) if p == proc.pid else os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    os.close(main)


def run_in_terminal(args: list[str], env: dict, timeout: float = 300.0) -> tuple[int, str]:
    """Run `ortho ARGS` to its end: (exit code, what the terminal showed, escape sequences and all)."""
    proc, main, out = _start(args, env, lambda text: True, timeout)
    try:
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            out += _read(main, 0.2)
        while chunk := _read(main, 0.2):
            out += chunk
        return proc.poll(), out.decode(errors="replace")
    finally:
        _end(proc, [], main)


def kill_in_terminal(args: list[str], env: dict, ready, start_timeout: float = 120.0, wait_s: float = 10.0) -> tuple:
    """Run `ortho ARGS` until `ready`, SIGKILL the command's process alone (no handler runs: what an OOM killer or
    `kill -9` does) and wait up to `wait_s` for the processes it had started to end on their own:
    (the command lines of those it had started, of those still alive)."""
    proc, main, _ = _start(args, env, ready, start_timeout)
    started = _descendants(proc.pid)
    try:
        names = [_command_line(p) for p in started]
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + wait_s
        while _alive(started) and time.monotonic() < deadline:
            time.sleep(0.2)
        return names, [_command_line(p) for p in _alive(started)]
    finally:
        _end(proc, started, main)


def interrupt_in_terminal(args: list[str], env: dict, ready, sig: int = signal.SIGINT, second: float | None = None,
                          start_timeout: float = 120.0, end_timeout: float = 30.0) -> Ended:
    """Run `ortho ARGS`, wait until its output shows `ready` (a string, or a test of the output so far), send `sig` to its process group (and again after
    `second` seconds when given), and wait for it to end."""
    proc, main, out = _start(args, env, ready, start_timeout)
    started = _descendants(proc.pid)
    try:
        os.killpg(proc.pid, sig)
        sent = time.monotonic()
        if second is not None:
            while time.monotonic() - sent < second and proc.poll() is None:
                out += _read(main, 0.05)
            if proc.poll() is None:
                os.killpg(proc.pid, sig)
        while proc.poll() is None and time.monotonic() - sent < end_timeout:
            out += _read(main, 0.2)
        took = time.monotonic() - sent
        while chunk := _read(main, 0.2):
            out += chunk
        code = proc.poll()
        time.sleep(0.5)  # the group's last processes, killed as the command exited, are gone
        gone = not _group_alive(proc.pid) and not _alive(started)
        return Ended(code if code is not None else -1, out.decode(errors="replace"), took, gone)
    finally:
        _end(proc, started, main)
