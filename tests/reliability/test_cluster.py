"""Ingest and curation on clusters the user started, reached by --address: a Dask scheduler and two workers as
separate processes, a Ray head from `ray start --head`. The catalog equals a single process's; a worker killed with
SIGKILL while it holds a batch loses no file and adds none twice (the scheduler runs the batch again elsewhere)."""

import shutil

import pytest

from catalog import db
from catalog.workspace import Workspace
from flows.demo import KL_PATTERN
from flows.runners import RunnerConfig
from ingest.config import IngestConfig
from ingest.sources import Source, add_source, load_sources
from tests.engines import DaskCluster, RayHead, tool, wait_until

pytest.importorskip("prefect_dask")

INGEST_VIEWS = {
    "files": "SELECT * EXCLUDE (run_id, committed_at, generation) FROM files ORDER BY ALL",
    "images": "SELECT * FROM images ORDER BY image_id",
    "labels": "SELECT * FROM labels ORDER BY ALL",
}
CURATION_VIEWS = {
    "dup_groups": "SELECT * FROM dup_groups ORDER BY ALL",
    "quality": "SELECT * FROM quality ORDER BY ALL",
    "splits": "SELECT * EXCLUDE (run_id) FROM splits ORDER BY ALL",
}


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    if tool("dask") is None:
        pytest.skip("the `dask` command is not installed (pip install 'distributed')")
    cluster = DaskCluster(tmp_path_factory.mktemp("dask"), workers=2).start()
    yield cluster
    cluster.stop()


def twin(path, phantom_workspace, sources=("pacs", "public")) -> Workspace:
    """A workspace with the phantom's sources and the serial run's secret (the same pseudonyms, the same ids)."""
    reference, _ = phantom_workspace
    ws = Workspace.open(path)
    shutil.copy(reference.secret_path, ws.secret_path)
    for name in sources:
        s = load_sources(reference)[name]
        add_source(ws, Source(name, s.location, s.kind, labels=s.labels, path_pattern=s.path_pattern,
                              modality=s.modality, body_part=s.body_part))
    return ws


def rows(ws: Workspace, views: dict) -> dict:
    return {view: db.query(ws, sql)[1] for view, sql in views.items()}


@pytest.mark.prefect
@pytest.mark.slow
def test_curation_on_a_running_dask_cluster_equals_a_local_one(tmp_path, phantom_workspace, prefect_harness,
                                                               dask_cluster):
    from curation.run import curate
    from flows.curate import run_curate
    from flows.ingest import ingest_flow

    ws = twin(tmp_path / "cluster", phantom_workspace, sources=("public",))
    [summary] = ingest_flow(str(ws.root), ["public"], IngestConfig(batch_size=4),
                            RunnerConfig("dask", address=dask_cluster.address))
    assert summary["files_processed"] == summary["files_seen"] == 12
    local = Workspace.open(tmp_path / "local")
    shutil.rmtree(local.root)
    shutil.copytree(ws.root, local.root)
    before = _signature_tasks_run(dask_cluster)
    run_curate(str(ws.root), runner=RunnerConfig("dask", address=dask_cluster.address))
    curate(local)
    assert _signature_tasks_run(dask_cluster) > before  # the signatures were computed on the workers
    a, b = rows(local, CURATION_VIEWS), rows(ws, CURATION_VIEWS)
    assert a == b and len(a["splits"]) == 6  # six patients


def _signature_tasks_run(cluster: DaskCluster) -> int:
    """How many Prefect `signatures` tasks the workers' own logs show."""
    return sum(path.read_text(errors="ignore").count("Task run 'signatures") for path in cluster.root.glob("w*.log"))


@pytest.mark.prefect
@pytest.mark.slow
def test_a_worker_killed_mid_batch_loses_no_file_and_adds_none(tmp_path, phantom_workspace, prefect_harness,
                                                               dask_cluster):
    """Runs last in this module: it leaves the cluster one worker short."""
    import threading

    from flows.ingest import ingest_flow

    ws = twin(tmp_path / "killed", phantom_workspace)
    results: list = []
    run = threading.Thread(target=lambda: results.extend(
        ingest_flow(str(ws.root), ["pacs", "public"], IngestConfig(batch_size=4),
                    RunnerConfig("dask", address=dask_cluster.address))))
    run.start()
    with dask_cluster.client() as c:
        def w0_holds_a_batch_after_a_commit() -> bool:
            busy = {info["name"] for addr, info in c.scheduler_info()["workers"].items() if c.processing().get(addr)}
            return "w0" in busy and any(ws.parts_dir.iterdir())

        assert wait_until(w0_holds_a_batch_after_a_commit, 120)
        dask_cluster.kill("w0")
    run.join(timeout=300)
    assert not run.is_alive() and [r["files_processed"] for r in results] == [100, 12]
    reference, _ = phantom_workspace
    assert rows(ws, INGEST_VIEWS) == rows(reference, INGEST_VIEWS)
    [(n, distinct)] = db.query(ws, "SELECT count(*), count(DISTINCT file_id) FROM files")[1]
    assert n == distinct == 112


@pytest.mark.prefect
@pytest.mark.slow
def test_ingest_on_a_running_ray_head_equals_a_single_process(tmp_path, phantom_workspace, prefect_harness):
    pytest.importorskip("prefect_ray", reason="prefect-ray is not installed (pip install prefect-ray)")
    if tool("ray") is None:
        pytest.skip("the `ray` command is not installed")
    from flows.ingest import ingest_flow
    from ingest.run import ingest_source

    reference = twin(tmp_path / "serial", phantom_workspace, sources=("public",))
    ingest_source(reference, "public")
    head = RayHead(tmp_path / "ray").start()
    try:
        ws = twin(tmp_path / "ray-ws", phantom_workspace, sources=("public",))
        [summary] = ingest_flow(str(ws.root), ["public"], IngestConfig(batch_size=4),
                                RunnerConfig("ray", address=head.address))
    finally:
        head.stop()
    assert summary["files_processed"] == 12
    assert rows(ws, INGEST_VIEWS) == rows(reference, INGEST_VIEWS)
