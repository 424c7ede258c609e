"""The ORTHO_* settings: read once at the top floor (flows/settings.py), handed to the library as arguments."""

import ast
from pathlib import Path

import pytest

from catalog import db, files
from flows import settings
from flows.runners import RunnerConfig
from flows.settings import RuntimeSettings, SettingsError
from ingest.batch import BatchSpec
from ingest.readers import Limits
from ingest.run import COMPACT_PARTS

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ("catalog", "ingest", "curation", "shards", "training", "evaluation")
# the environment reads allowed below the top floor: Workspace.open() honours ORTHO_WORKSPACE for callers outside
# the repo; torchrun's contract; the torchrun entry point's offline guard; a PACS source's `--credentials env:NAME`,
# read by name in the process that connects (passed down, the secret would travel in Prefect's parameters)
ALLOWED = {"catalog/workspace.py", "training/distributed.py", "training/__main__.py", "ingest/pacs/options.py"}


def _reads_environment(tree: ast.AST) -> bool:
    return any(isinstance(n, ast.Attribute) and n.attr in ("environ", "getenv", "environb") or
               isinstance(n, ast.Name) and n.id in ("environ", "getenv") for n in ast.walk(tree))


def test_the_library_does_not_read_the_environment():
    readers = {str(p.relative_to(ROOT)) for pkg in LIBRARY for p in sorted((ROOT / pkg).rglob("*.py"))
               if _reads_environment(ast.parse(p.read_text()))}
    assert readers <= ALLOWED, sorted(readers - ALLOWED)


def test_unset_variables_leave_the_library_defaults():
    s = RuntimeSettings.from_environ({})
    assert s == RuntimeSettings()
    assert s.ingest_options() == {"limits": Limits()}


def test_every_variable_is_read():
    s = RuntimeSettings.from_environ({"ORTHO_FSYNC": "0", "ORTHO_DUCKDB_MEMORY": "1GB", "ORTHO_MAX_FILE_BYTES": "10",
                                      "ORTHO_MAX_DECODED_BYTES": "20", "ORTHO_MAX_PIXELS": "30",
                                      "ORTHO_COMPACT_PARTS": "5", "ORTHO_WORKSPACE": "elsewhere"})
    assert s == RuntimeSettings(fsync=False, duckdb_memory="1GB", max_file_bytes=10, max_decoded_bytes=20,
                                max_pixels_per_image=30, compact_parts=5)
    assert s.ingest_options() == {"limits": Limits(10, 20, 30), "compact_parts": 5}
    assert RuntimeSettings.from_environ({"ORTHO_FSYNC": "1"}).fsync is True
    assert RuntimeSettings(**s.as_dict()) == s  # what a task receives


def test_a_malformed_number_is_one_clear_error():
    with pytest.raises(SettingsError, match="ORTHO_MAX_PIXELS is 'lots', not a whole number"):
        RuntimeSettings.from_environ({"ORTHO_MAX_PIXELS": "lots"})


@pytest.fixture
def restore_settings():
    before, fsync, memory = settings.current(), files._FSYNC, db._MEMORY_LIMIT
    yield
    settings._current = before
    files.configure(fsync=fsync)
    db.configure(memory_limit=memory)


def _memory_limit(ws) -> str:
    with db.connection(ws) as con:
        return con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]


def test_task_settings_reach_the_process_wide_configuration(ws, restore_settings):
    default = _memory_limit(ws)
    settings.apply_task_settings(RuntimeSettings(fsync=True, duckdb_memory="1GB").as_dict())
    assert files._fsync_enabled() and settings.current().duckdb_memory == "1GB"
    assert _memory_limit(ws) != default
    settings.apply_task_settings(None)  # keeps this process's own
    assert settings.current().duckdb_memory == "1GB"
    settings.load({"ORTHO_FSYNC": "0"})
    assert not files._fsync_enabled()


def test_the_batch_spec_carries_the_runs_limits(tmp_path):
    spec = BatchSpec("s", "run", 0, "run-000000", [], None, Limits(max_decoded_bytes=8 << 20))
    spec.save(tmp_path / "b.json")
    assert BatchSpec.load(tmp_path / "b.json").limits == Limits(max_decoded_bytes=8 << 20)
    BatchSpec("s", "run", 0, "run-000001", []).save(tmp_path / "c.json")
    assert BatchSpec.load(tmp_path / "c.json").limits is None
    assert COMPACT_PARTS == 256


def test_a_flows_settings_reach_its_process_pool_workers(ws, tmp_path, prefect_harness, restore_settings):
    import numpy as np

    from flows.ingest import ingest_flow
    from ingest.sources import Source, add_source
    from tests.ingest.file_factory import nifti_bytes

    src = tmp_path / "src"
    src.mkdir()
    # 16 MiB declared: within the default limits, over the flow's 8 MiB
    (src / "big.nii.gz").write_bytes(nifti_bytes(np.zeros((512, 512, 64), np.uint8)))
    add_source(ws, Source("s", str(src), "internal"))
    settings.load({"ORTHO_FSYNC": "0", "ORTHO_MAX_DECODED_BYTES": str(8 << 20)})
    ingest_flow(str(ws.root), ["s"], runner=RunnerConfig("processes", 1))
    assert db.query(ws, "SELECT status, reason FROM files")[1] == [("quarantined", "absurd_dimensions")]


def test_a_command_under_a_malformed_variable_ends_in_one_line(tmp_path):
    import os
    import subprocess
    import sys

    env = dict(os.environ, ORTHO_MAX_PIXELS="lots")
    r = subprocess.run([sys.executable, "-m", "flows.cli", "status", "--workspace", str(tmp_path / "w")], env=env,
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == "error: ORTHO_MAX_PIXELS is 'lots', not a whole number"
