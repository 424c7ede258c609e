"""The small print of the command line: cells are text, not markup; console log lines go where the progress bars
draw them; no link to the temporary Prefect server is printed."""

import io
import logging
import sys

from typer.testing import CliRunner

from flows.cli import app
from flows.cli.common import CurrentStderrHandler

runner = CliRunner()


def test_table_cells_are_shown_as_written(phantom_workspace):
    ws, _ = phantom_workspace
    r = runner.invoke(app, ["sql", "SELECT '[bold]x[/bold] :x:' AS \"[red]c\"", "--workspace", str(ws.root)])
    assert r.exit_code == 0 and "[bold]x[/bold] :x:" in r.output and "[red]c" in r.output and "❌" not in r.output


def test_console_log_lines_follow_stderr_as_it_is_when_they_are_written(monkeypatch):
    """rich's progress bars replace sys.stderr with a proxy that prints above them: a handler made before must
    write through it, not over the bars."""
    handler = CurrentStderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    later = io.StringIO()
    monkeypatch.setattr(sys, "stderr", later)
    handler.emit(logging.LogRecord("ortho", logging.WARNING, __file__, 1, "quarantined file %s", ("ab12",), None))
    assert later.getvalue() == "WARNING quarantined file ab12\n"


def test_prefect_logs_warnings_only():
    """Its INFO lines are a line per task run over the bars and links to a server that dies with the command."""
    import os

    assert os.environ["PREFECT_LOGGING_LEVEL"] == "WARNING"
