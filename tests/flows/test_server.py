"""The command's own temporary Prefect server (flows/server.py)."""

import pytest


def test_a_server_that_does_not_come_up_is_one_line_not_prefects_traceback(monkeypatch):
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows import server

    stopped = []

    def late(self, timeout=None):
        raise RuntimeError("Timed out while attempting to connect to ephemeral Prefect API server.")

    monkeypatch.setattr(SubprocessASGIServer, "start", late)
    monkeypatch.setattr(server, "_stop", lambda s: stopped.append(s))
    with temporary_settings(updates={PREFECT_API_URL: None}), pytest.raises(server.ServerNotStarted) as caught:
        with server.one_prefect_server():
            pass
    assert "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" in str(caught.value) and len(stopped) == 1
    assert caught.value.exit_code == 75


def _start_with(monkeypatch, boot: str, limit_s: float):
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )

    from prefect.server.api.server import SubprocessASGIServer

    from flows import server

    monkeypatch.setattr(server, "_BOOT", boot)
    # Prefect keeps one server per port in a class-wide dict, which Prefect's own code looks up (the command's server
    # must stay in it). A test harness's server is in it too: this test's server must not be handed that one.
    monkeypatch.setattr(SubprocessASGIServer, "_instances", {})
    with temporary_settings(updates={PREFECT_API_URL: None, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: limit_s}):
        with pytest.raises(server.ServerNotStarted) as caught:
            with server.one_prefect_server():
                pass
    return str(caught.value)


def test_a_server_that_dies_at_start_ends_the_wait_at_once(monkeypatch):
    """Prefect's loop waited the whole limit (300 s in the Makefile) for a server that had already exited."""
    import time

    began = time.monotonic()
    said = _start_with(monkeypatch, "import sys; sys.exit(1)", 300)
    assert "exited as it started (exit code 1)" in said and time.monotonic() - began < 120


def test_the_start_up_limit_is_wall_time(monkeypatch):
    """A server that never answers is given up after the limit in seconds, however slow each poll is. Prefect's loop
    counted each poll as 0.1 s: with polls of 1 s (a busy machine, here a slowed sleep) a 2 s limit lasted 20 s."""
    import time
    import types

    import prefect.server.api.server as prefect_server

    slow = types.SimpleNamespace(**{k: getattr(time, k) for k in dir(time) if not k.startswith("__")})
    slow.sleep = lambda seconds: time.sleep(1.0)
    monkeypatch.setattr(prefect_server, "time", slow)
    began = time.monotonic()
    said = _start_with(monkeypatch, "import time; time.sleep(600)", 2)
    assert "did not answer in time" in said and "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" in said
    assert time.monotonic() - began < 10
