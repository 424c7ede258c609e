"""The ingest, curate and shard flows run unchanged on a Dask cluster (prefect-dask, two local
workers) and give the catalog and the byte-identical shards a single process gives."""

import shutil

import pytest

from catalog import db
from catalog.workspace import Workspace
from flows.demo import KL_PATTERN
from flows.runners import RunnerConfig
from ingest.config import IngestConfig
from ingest.sources import Source, add_source

pytest.importorskip("prefect_dask")

VIEWS = {
    "files": "SELECT * EXCLUDE (run_id, committed_at, generation) FROM files ORDER BY ALL",
    "images": "SELECT * FROM images ORDER BY image_id",
    "labels": "SELECT * FROM labels ORDER BY ALL",
    "dup_groups": "SELECT * EXCLUDE (run_id) FROM dup_groups ORDER BY ALL",
    "quality": "SELECT * EXCLUDE (run_id) FROM quality ORDER BY ALL",
    "splits": "SELECT * EXCLUDE (run_id) FROM splits ORDER BY ALL",
}
QUERY = "SELECT image_id FROM images WHERE body_part = 'knee'"


def register(ws: Workspace, phantom_root) -> None:
    add_source(ws, Source("pacs", str(phantom_root / "pacs"), "internal", labels=["csv:labels.csv"]))
    add_source(ws, Source("public", str(phantom_root / "public"), "public", labels=["folder:kl_grade"],
                          path_pattern=KL_PATTERN, modality="DX", body_part="knee"))


def columns(ws: Workspace, view: str) -> list[str]:
    return db.query(ws, f"SELECT * FROM {view} LIMIT 0")[0]


@pytest.mark.prefect
@pytest.mark.slow
def test_dask_runs_equal_a_single_process_run(tmp_path, phantom_root, prefect_harness):
    from curation.run import curate
    from flows.curate import run_curate
    from flows.ingest import ingest_flow
    from flows.shards import run_build
    from ingest.run import ingest_source
    from shards.spec import ShardSetSpec
    from shards.writer import build_shard_set, shard_sets_dir

    single = Workspace.open(tmp_path / "single")
    register(single, phantom_root)
    for name in ("pacs", "public"):
        ingest_source(single, name)
    curate(single)
    path_a, manifest_a, _ = build_shard_set(single, ShardSetSpec("knee", QUERY, samples_per_shard=16))

    dask = Workspace.open(tmp_path / "dask")
    shutil.copy(single.secret_path, dask.secret_path)  # the same pseudonym key: the same ids
    register(dask, phantom_root)
    results = ingest_flow(str(dask.root), ["pacs", "public"], IngestConfig(batch_size=8),
                          RunnerConfig("dask", workers=2))
    assert [r["files_processed"] for r in results] == [r["files_seen"] for r in results]
    run_curate(str(dask.root), runner=RunnerConfig("dask", workers=2))
    out = run_build(str(dask.root), ShardSetSpec("knee", QUERY, samples_per_shard=16), RunnerConfig("dask", workers=2))

    for view, sql in VIEWS.items():
        if "run_id" not in columns(single, view):
            sql = sql.replace(" EXCLUDE (run_id)", "")
        a, b = db.query(single, sql)[1], db.query(dask, sql)[1]
        assert a == b, view
    assert len(db.query(single, VIEWS["images"])[1]) > 20
    from shards.manifest import Manifest

    manifest_b = Manifest.read(out["manifest"])
    assert manifest_a.selection_sha256 == manifest_b.selection_sha256
    assert [(e.file, e.sha256, e.bytes) for e in manifest_a.shards] == \
        [(e.file, e.sha256, e.bytes) for e in manifest_b.shards]
    assert len(manifest_a.shards) > 1
    for e in manifest_a.shards:
        assert (path_a.parent / e.file).read_bytes() == (shard_sets_dir(dask) / "knee" / e.file).read_bytes()
