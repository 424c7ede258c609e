"""The small print of the command line: cells are text, not markup; console log lines go where the progress bars
draw them; no link to the temporary Prefect server is printed."""

import io
import logging
import sys

import numpy as np
import pytest
from PIL import Image
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


def test_prefect_console_shows_warnings_only_and_the_server_keeps_info():
    """Prefect's INFO lines on the console are a line per task run over the bars and links to a server that dies with
    the command; the same lines in the server's logs are a served run's record (each stage's outcome and seconds)."""
    from prefect.logging.configuration import PROCESS_LOGGING_CONFIG, setup_logging
    from prefect.logging.handlers import APILogHandler, PrefectConsoleHandler

    if not PROCESS_LOGGING_CONFIG:
        setup_logging()  # as the first flow run of a command does

    console = [h for h in logging.getLogger().handlers if isinstance(h, PrefectConsoleHandler)]
    assert console and all(h.level == logging.WARNING for h in console)
    flow_runs = logging.getLogger("prefect.flow_runs")
    assert flow_runs.isEnabledFor(logging.INFO)
    assert any(isinstance(h, APILogHandler) and h.level <= logging.INFO for h in flow_runs.handlers)


@pytest.mark.slow
@pytest.mark.prefect
def test_worker_quarantine_lines_are_printed_by_the_command_above_its_bars(tmp_path, prefect_harness):
    """Under the processes runner the workers share the terminal: their quarantine lines used to be written by them,
    in Prefect's format, over the bars. Now the command prints each once, through the console that draws the bars;
    the log file has each once too."""
    import os
    import re

    from prefect.settings import PREFECT_API_URL

    from tests.flows.terminal import run_in_terminal

    tree = tmp_path / "tree"
    tree.mkdir()
    for k in range(6):
        Image.fromarray(np.full((24, 24), 40 * k, np.uint8)).save(tree / f"good{k}.png")
    (tree / "empty.dcm").write_bytes(b"")
    (tree / "noise.bin").write_bytes(b"not an image at all")
    (tree / "cut.png").write_bytes((tree / "good1.png").read_bytes()[:40])
    ws = str(tmp_path / "workspace")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(PYTHONPATH=os.getcwd(), ORTHO_FSYNC="0", COLUMNS="120", TERM="xterm",
               PREFECT_API_URL=PREFECT_API_URL.value())
    code, _ = run_in_terminal(["sources", "add", "t", str(tree), "--kind", "public", "-w", ws], env)
    assert code == 0
    code, out = run_in_terminal(["ingest", "--runner", "processes", "--workers", "1", "--batch-size", "2",
                                 "-w", ws], env)
    assert code == 0, out[-3000:]
    said = re.findall(r"WARNING quarantined file ([0-9a-f]+) \(source t\)", out)
    assert len(said) == len(set(said)) == 3, out[-3000:]
    assert "| WARNING |" not in out  # no line in a worker's own (Prefect's) format
    logged = re.findall(r"quarantined file ([0-9a-f]+)", (tmp_path / "workspace" / "logs" / "ingest.log").read_text())
    assert sorted(logged) == sorted(said)


@pytest.mark.slow
@pytest.mark.prefect
def test_curation_worker_lines_are_printed_by_the_command_too(tmp_path, prefect_harness):
    """A stored image that cannot be read is excluded by a signature worker: under the processes runner its line is
    printed once by the command, in the command's format, not by the worker over the bars."""
    import os
    import re

    from prefect.settings import PREFECT_API_URL

    from catalog import db
    from catalog.store import ImageStore
    from catalog.workspace import Workspace
    from tests.flows.terminal import run_in_terminal

    tree = tmp_path / "tree"
    tree.mkdir()
    for k in range(5):
        Image.fromarray(np.random.default_rng(k).integers(0, 255, (48, 48), np.uint8)).save(tree / f"g{k}.png")
    ws = str(tmp_path / "workspace")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(PYTHONPATH=os.getcwd(), ORTHO_FSYNC="0", COLUMNS="120", TERM="xterm",
               PREFECT_API_URL=PREFECT_API_URL.value())
    assert run_in_terminal(["sources", "add", "t", str(tree), "--kind", "public", "-w", ws], env)[0] == 0
    assert run_in_terminal(["ingest", "-w", ws], env)[0] == 0
    workspace = Workspace.open(ws)
    broken = db.query(workspace, "SELECT image_id FROM images ORDER BY 1 LIMIT 1")[1][0][0]
    ImageStore(workspace.store_dir).path(broken).write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    code, out = run_in_terminal(["curate", "--runner", "processes", "--workers", "1", "-w", ws], env)
    assert code == 0, out[-3000:]
    said = re.findall(r"WARNING curate: image ([0-9a-f]+) excluded", out)
    assert said == [broken], out[-3000:]
    assert "| WARNING |" not in out
