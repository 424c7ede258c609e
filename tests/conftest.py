import os
from pathlib import Path

import pytest

os.environ.setdefault("ORTHO_FSYNC", "0")  # tests do not need power-loss durability
import flows  # noqa: E402,F401  (Prefect defaults)

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def shared_data(sub: str = "") -> Path:
    path = SHARED_DATA / sub
    if not path.exists():
        pytest.skip(f"real data not available at {path} (a fresh clone has none)")
    return path


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory) -> Path:
    from ingest.phantom import write_phantom

    return write_phantom(tmp_path_factory.mktemp("phantom") / "tree")


@pytest.fixture
def ws(tmp_path):
    from catalog.workspace import Workspace

    return Workspace.open(tmp_path / "workspace")


@pytest.fixture(scope="session")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


@pytest.fixture(scope="session")
def phantom_workspace(tmp_path_factory, phantom_root):
    """The phantom tree ingested once (serially, without Prefect) for read-only tests."""
    from catalog.workspace import Workspace
    from flows.demo import KL_PATTERN
    from ingest.run import ingest_source
    from ingest.sources import Source, add_source

    ws = Workspace.open(tmp_path_factory.mktemp("ws") / "workspace")
    add_source(ws, Source("pacs", str(phantom_root / "pacs"), "internal", labels=["csv:labels.csv"]))
    add_source(ws, Source("public", str(phantom_root / "public"), "public", labels=["folder:kl_grade"],
                          path_pattern=KL_PATTERN, modality="DX", body_part="knee"))
    summaries = [ingest_source(ws, "pacs"), ingest_source(ws, "public")]
    return ws, summaries
