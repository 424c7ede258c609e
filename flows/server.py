"""One Prefect server per command. Without a configured PREFECT_API_URL, Prefect starts a temporary server in
every process that reports a run: the command's, and each worker process of a `processes` task runner, which
then race for ports and for the same SQLite database (a curation with two workers started three servers, and one
failed to bind with a stack trace). The command starts the one server here and hands its URL to the flow's
settings, which Prefect passes on to every worker process it starts.

The server runs in a session of its own, so a terminal's Ctrl-C reaches the command alone and the server runs until
the command stops it, last (flows/interrupt.py). It starts with the signals unblocked (a command blocks them, and a
blocked mask is inherited: a server that kept it ignored SIGTERM), and on Linux it is killed when the command's
process dies, even by SIGKILL: no orphaned server holds a port and a database."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from catalog.errors import OrthoError
from flows import interrupt


class ServerNotStarted(OrthoError):
    """Prefect's temporary server did not come up."""

    exit_code = os.EX_TEMPFAIL  # 75: try again later

# Run in the server's process before uvicorn: die with the parent (Linux prctl PR_SET_PDEATHSIG; the parent's pid is
# compared after, for a parent that died before the call), take the signals again, then `python -m uvicorn ARGS`.
_BOOT = """
import ctypes, os, runpy, signal, sys
parent = int(sys.argv.pop(1))
if sys.platform.startswith("linux"):
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)
if os.getppid() != parent:
    sys.exit(0)
signal.pthread_sigmask(signal.SIG_UNBLOCK, (signal.SIGINT, signal.SIGTERM, signal.SIGHUP))
runpy.run_module("uvicorn", run_name="__main__", alter_sys=True)
"""


_TOO_LATE = ("the temporary Prefect server did not answer in time (a busy machine?): raise "
             "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, or set PREFECT_API_URL to a running server")


class _NotUp(RuntimeError):
    """The server exited while starting, or did not answer within the start-up limit."""


class _WatchedStart(subprocess.Popen):
    """The server's process, watched while Prefect waits for it to answer. Prefect's loop counts each poll as
    0.1 s, though a poll can take seconds on a busy machine (the limit stretched), and only a port clash (exit code
    3) ends it early: a server that died at start was waited for the whole limit. Here the limit is wall time and any
    other exit ends the wait at once. `deadline` None: not starting any more, a plain process."""

    deadline: float | None = None

    def poll(self):
        code = super().poll()
        if self.deadline is not None:
            if code not in (None, 3):
                raise _NotUp(f"the temporary Prefect server exited as it started (exit code {code}): is PREFECT_HOME "
                             f"writable? Or set PREFECT_API_URL to a running server")
            if time.monotonic() > self.deadline:
                raise _NotUp(_TOO_LATE)
        return code


def _server_class():
    import prefect
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, get_current_settings

    class CommandServer(SubprocessASGIServer):
        # Prefect keeps one server per port in a class-wide dict: the command's must never be another server of the
        # process (a test harness's), which it would then stop.
        _instances: dict = {}
        deadline: float | None = None

        def _run_uvicorn_command(self) -> subprocess.Popen:
            """Prefect's command and environment (3.x's SubprocessASGIServer), started through _BOOT."""
            env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
                   "PREFECT__SERVER_FINAL": "1", **get_current_settings().to_environment_variables(exclude_unset=True)}
            uvicorn = ["--app-dir", str(prefect.__module_path__.parent), "--factory",
                       "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(self.port),
                       "--log-level", "error", "--lifespan", "on"]
            process = _WatchedStart([sys.executable, "-c", _BOOT, str(os.getpid()), *uvicorn], env=env,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
            if self.deadline is None:  # a restart after a port clash keeps the first start's limit
                self.deadline = time.monotonic() + PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value()
            process.deadline = self.deadline
            return process

    return CommandServer


@contextmanager
def one_prefect_server() -> Iterator[None]:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if PREFECT_API_URL.value():  # a real server, or a test harness: every process already reports there
        yield
        return
    server = _server_class()()
    try:
        server.start()
    except RuntimeError as e:  # ours, or Prefect's "Timed out while attempting to connect": one line
        _stop(server)
        raise ServerNotStarted(str(e) if isinstance(e, _NotUp) else _TOO_LATE) from None
    server.server_process.deadline = None  # up: from here on a plain process
    interrupt.state.spared.add(server.server_process.pid)
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            try:
                yield
            finally:
                if not interrupt.interrupted():
                    _flush_logs()  # the run's last log records reach the server before it stops
    finally:
        _stop(server)


def _stop(server) -> None:
    """Killed, not terminated: a temporary server holds nothing that outlives the command (its logs were flushed to
    it above), and uvicorn's graceful shutdown would wait on the flow's idle connections."""
    process = server.server_process
    if process is not None:
        process.deadline = None  # Popen.kill polls first: no start-up verdict now
        interrupt.state.spared.discard(process.pid)
        process.kill()
        process.wait()
    server.stop()


def _flush_logs() -> None:
    """Prefect's background senders of logs and events, drained while their server is up (at interpreter exit
    they would try a stopped server and print "Error logging to API")."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        try:
            worker.drain_all(timeout=5)
        except Exception:  # noqa: BLE001  (nothing to drain; a failure here must not hide the command's result)
            pass
