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
