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
    group_gone: bool  # no process of its group left (the server, the workers)


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


def interrupt_in_terminal(args: list[str], env: dict, ready, sig: int = signal.SIGINT, second: float | None = None,
                          start_timeout: float = 120.0, end_timeout: float = 30.0) -> Ended:
    """Run `ortho ARGS`, wait until its output shows `ready` (a string, or a test of the output so far), send `sig` to its process group (and again after
    `second` seconds when given), and wait for it to end."""
    main, sub = os.openpty()
    proc = subprocess.Popen([*ORTHO, *args], stdin=sub, stdout=sub, stderr=sub, env=env, start_new_session=True,
                            cwd=Path(__file__).resolve().parents[2])
    os.close(sub)
    out = b""
    try:
        deadline = time.monotonic() + start_timeout
        is_ready = ready if callable(ready) else (lambda text: ready in text)
        while not is_ready(out.decode(errors="replace")):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"not ready (exit {proc.poll()}): {out.decode(errors='replace')[-3000:]}")
            out += _read(main, 0.2)
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
        return Ended(code if code is not None else -1, out.decode(errors="replace"), took, not _group_alive(proc.pid))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever the command left behind, never a later test's problem
        except ProcessLookupError:
            pass
        os.close(main)
