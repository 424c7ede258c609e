"""Every message a user must see is an OrthoError (catalog/errors.py): one line and its exit code. A built-in
exception raised with a message ends as `internal_error (ValueError)` in a Prefect state or as a traceback, so
package code raises none; an internal invariant raises catalog.errors.BrokenInvariant (or asserts), a settings
dataclass refuses a value with SettingRefused."""

import ast
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from catalog.errors import BrokenInvariant, OrthoError

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("catalog", "ingest", "curation", "shards", "training", "evaluation", "flows")
BARE = {"ValueError", "RuntimeError", "KeyError", "SystemExit", "Exception"}


def _has_message(call: ast.Call) -> bool:
    """Anything but an exit status: `SystemExit(2)` says nothing, `SystemExit("...")` prints its text."""
    values = [*call.args, *(k.value for k in call.keywords)]
    return any(not (isinstance(v, ast.Constant) and isinstance(v.value, int)) for v in values)


def _raised_name(call: ast.Call) -> str | None:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "builtins":
        return func.attr
    return None


def bare_raises(source: str) -> list[str]:
    """`raise ValueError("...")` and `sys.exit("...")`: built-in exceptions carrying a message, by line."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            name = _raised_name(node.exc)
            if name in BARE and _has_message(node.exc):
                found.append(f"{node.lineno}: raise {name}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "exit" \
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "sys" and _has_message(node):
            found.append(f"{node.lineno}: sys.exit")
    return found


def test_the_walker_finds_every_form_of_a_bare_raise():
    source = """
raise ValueError("no source named x")
raise builtins.RuntimeError(f"{n} left")
raise KeyError(name)
raise SystemExit("bye")
sys.exit("bye")
raise SystemExit(2)
raise OrthoError("fine")
raise BrokenInvariant("fine")
raise ValueError
sys.exit(main())
"""
    assert bare_raises(source) == ["2: raise ValueError", "3: raise RuntimeError", "4: raise KeyError",
                                   "5: raise SystemExit", "6: sys.exit", "11: sys.exit"]


def test_package_code_raises_no_built_in_exception_with_a_message():
    files = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]
    assert len(files) > 100
    found = [f"{p.relative_to(ROOT)}:{hit}" for p in files for hit in bare_raises(p.read_text())
             if "__main__" not in p.name]  # training/__main__.py: torchrun's entry, `sys.exit(main())`
    assert not found, "a user's message is an OrthoError; an internal invariant a BrokenInvariant:\n" + "\n".join(found)


def test_an_unknown_source_and_an_unreadable_secret_are_user_errors(tmp_path):
    from catalog.workspace import Workspace
    from ingest.run import ingest_source

    ws = Workspace.open(tmp_path / "ws")
    with pytest.raises(OrthoError, match="no source named 'nope'"):
        ingest_source(ws, "nope")
    ws.secret_path.write_text("cut short")
    with pytest.raises(OrthoError, match="workspace secret is unreadable"):
        ws.secret()


def test_an_old_manifest_ends_shards_verify_with_one_line(tmp_path):
    from flows.cli import app

    (tmp_path / "manifest.json").write_text(json.dumps({"schema_version": 0, "shards": []}))
    result = CliRunner().invoke(app, ["shards", "verify", str(tmp_path / "manifest.json")])
    assert result.exit_code == 2, result.output
    assert "manifest schema version 0 is not 1" in result.output and "Traceback" not in result.output


def test_settings_refused_name_their_section_and_invariants_stay_internal():
    from catalog.config import ConfigError
    from curation.run import resolve_config
    from ingest.reasons import Quarantine

    with pytest.raises(ConfigError, match="^config section 'splits': split ratios must"):
        resolve_config(["splits.ratios={train: 0.5}"])
    with pytest.raises(BrokenInvariant) as e:
        Quarantine("not_a_reason")
    assert not isinstance(e.value, OrthoError)  # a bug: the firewall keeps only its type name
