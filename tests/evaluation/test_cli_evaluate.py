"""`ortho evaluate` and `ortho report` through the real Prefect flow, and their one-line errors."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
from typer.testing import CliRunner

from flows.cli import app

runner = CliRunner()


@pytest.fixture
def workspace(tmp_path, bars_workspace):
    root = tmp_path / "workspace"
    shutil.copytree(bars_workspace.root, root)
    return root


def test_bad_inputs_are_one_line_errors(workspace, pico_checkpoint, tmp_path):
    w = ["--workspace", str(workspace)]
    r = runner.invoke(app, ["evaluate", "--checkpoint", str(tmp_path / "nope.safetensors"), "--task", "kl_grade", *w])
    assert r.exit_code == 2 and "does not exist" in r.output
    r = runner.invoke(app, ["evaluate", "--checkpoint", str(pico_checkpoint), "--task", "kl_grade",
                            "--protocol", "linear,svm", *w])
    assert r.exit_code == 2 and "unknown protocol 'svm'" in r.output
    r = runner.invoke(app, ["evaluate", "--checkpoint", str(pico_checkpoint), "--task", "kl_grade",
                            "--label-fractions", "0,1", *w])
    assert r.exit_code == 2 and "label fractions must be in (0, 1]" in r.output
    r = runner.invoke(app, ["report", str(tmp_path)])
    assert r.exit_code == 2 and "no metrics.json" in r.output


def test_a_misspelled_task_is_refused_before_torch_or_prefect_is_imported(workspace, pico_checkpoint):
    """The refusal is one line with the task meant, and the command got there without the heavy imports (they took
    about 20 s on a loaded machine before the check moved ahead of them)."""
    code = textwrap.dedent(f"""
        import sys
        from flows.cli import app
        try:
            app(["evaluate", "--checkpoint", {str(pico_checkpoint)!r}, "--task", "kl_grad",
                 "--workspace", {str(workspace)!r}], prog_name="ortho")
        except SystemExit as e:
            print("exit", e.code)
        print("heavy:", sorted({{m.split(".")[0] for m in sys.modules}} & {{"torch", "timm", "prefect", "sklearn"}}))
        """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "COLUMNS": "200"})
    assert r.stdout.splitlines()[-2:] == ["exit 2", "heavy: []"], r.stdout + r.stderr
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.startswith("error:")]
    assert lines == ["error: task kl_grad has no labelled images in this catalog (see `ortho tasks list`) "
                     "(did you mean 'kl_grade'?)"], r.stdout + r.stderr


@pytest.mark.prefect
@pytest.mark.slow
def test_evaluate_then_report_then_sql(workspace, pico_checkpoint, prefect_harness):
    w = ["--workspace", str(workspace)]
    r = runner.invoke(app, ["evaluate", "--checkpoint", str(pico_checkpoint), "--task", "kl_grade,no_such_task",
                            "--protocol", "knn", "--seeds", "1", *w])
    assert r.exit_code == 2 and "task no_such_task has no labelled images" in r.output
    r = runner.invoke(app, ["evaluate", "--checkpoint", str(pico_checkpoint), "--task", "kl_grade",
                            "--protocol", "linear,knn", "--label-fractions", "0.5,1", "--seeds", "2",
                            "--baseline", "random", "--knn-k", "3,5", "--bootstrap", "100", "--eval-id", "cli", *w])
    assert r.exit_code == 0, r.output
    assert "kl_grade on test (16 images, 8 patients)" in r.output and "report:" in r.output
    out = workspace / "evals" / "cli"
    assert (out / "report.html").is_file() and json.loads((out / "metrics.json").read_text())["eval_id"] == "cli"
    (out / "report.html").unlink()
    r = runner.invoke(app, ["report", str(out)])
    assert r.exit_code == 0 and (out / "report.html").is_file()
    r = runner.invoke(app, ["sql", "SELECT model, protocol, fraction, count(*) AS n FROM evals "
                                   "WHERE task = 'kl_grade' GROUP BY ALL ORDER BY ALL", "--format", "json", *w])
    rows = {(d["model"], d["protocol"], d["fraction"]): d["n"] for d in json.loads(r.output)}
    assert rows == {("majority", "majority", 1.0): 1, ("pretrained", "knn", 0.5): 2, ("pretrained", "knn", 1.0): 1,
                    ("pretrained", "linear", 0.5): 2, ("pretrained", "linear", 1.0): 1,
                    ("random", "knn", 0.5): 2, ("random", "knn", 1.0): 2, ("random", "linear", 0.5): 2,
                    ("random", "linear", 1.0): 2}
