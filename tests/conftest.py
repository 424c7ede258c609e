import logging
import os
from pathlib import Path

import pytest

os.environ.setdefault("ORTHO_FSYNC", "0")  # tests do not need power-loss durability
# One BLAS/OpenMP thread per test process, set before numpy or torch is first imported (child processes inherit it).
# `make test` runs one xdist worker per core, so a library's own threads only oversubscribe the cores: OpenBLAS's
# threads spin against the other worker's (a 128x128 matmul in curation/dedup/signatures.py took 34 ms instead of
# 0.4 ms, and curating 24 phantom patients 54 s of CPU instead of 16). No assertion depends on the thread count; values set
# by the caller win.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
import flows  # noqa: E402,F401  (Prefect defaults; flows.settings reads ORTHO_FSYNC and passes it on to task workers)


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory) -> Path:
    from flows.phantom import write_phantom

    return write_phantom(tmp_path_factory.mktemp("phantom") / "tree")


@pytest.fixture
def ortho_log(caplog):
    # the CLI's logging set-up may have stopped "ortho" from propagating: listen on it directly
    logger = logging.getLogger("ortho")
    logger.addHandler(caplog.handler)
    caplog.handler.setLevel(logging.DEBUG)
    old = logger.level
    logger.setLevel(logging.DEBUG)
    yield caplog
    logger.removeHandler(caplog.handler)
    logger.setLevel(old)


@pytest.fixture
def ws(tmp_path):
    from catalog.workspace import Workspace

    return Workspace.open(tmp_path / "workspace")


@pytest.fixture(scope="session")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=300):  # 90 s failed at load 20 on 2 cores
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


def pytest_collection_modifyitems(config, items):
    """A test that uses the Prefect harness, itself or through another fixture, is marked `prefect`, so that
    `make test-fast` (-m "not prefect ...") leaves out every test that starts a Prefect server."""
    for item in items:
        if "prefect_harness" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.prefect)


def pytest_unconfigure(config):
    """Prefect's console handlers hold the stream they were made with (pytest's capture, a CliRunner's buffer),
    closed by now; whatever Prefect logs while the interpreter exits (a temporary server stopping) would end the
    run with a "Logging error" traceback. Nothing after the last test is worth printing."""
    from prefect.logging.handlers import PrefectConsoleHandler

    for logger in [logging.getLogger(), *map(logging.getLogger, logging.root.manager.loggerDict)]:
        for handler in list(getattr(logger, "handlers", [])):
            if isinstance(handler, PrefectConsoleHandler):
                logger.removeHandler(handler)
