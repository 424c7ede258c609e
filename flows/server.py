"""One Prefect server per command. Without a configured PREFECT_API_URL, Prefect starts a temporary server in
every process that reports a run: the command's, and each worker process of a `processes` task runner, which
then race for ports and for the same SQLite database (a curation with two workers started three servers, and one
failed to bind with a stack trace). The command starts the one server here and hands its URL to the flow's
settings, which Prefect passes on to every worker process it starts.

Started inside a command, the server inherits its blocked signals (flows/interrupt.py): a terminal's Ctrl-C reaches
the command alone, and the server runs until the command stops it, last."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from flows import interrupt


@contextmanager
def one_prefect_server() -> Iterator[None]:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if PREFECT_API_URL.value():  # a real server, or a test harness: every process already reports there
        yield
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    server.start()
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
    """Killed, not terminated: it ignores SIGTERM (the blocked mask it inherited), and a temporary server holds
    nothing that outlives the command (its logs were flushed to it above)."""
    process = server.server_process
    if process is not None:
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
