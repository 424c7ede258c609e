import shutil

from catalog import db
from catalog.compact import compact
from catalog.workspace import Workspace
from ingest.run import ingest_source
from ingest.sources import Source, add_source
from tests.snapshots import ingested_snapshot as snapshot


def test_compaction_keeps_the_catalog_and_merges_the_parts(tmp_path, phantom_root):
    ws = Workspace.open(tmp_path / "w")
    add_source(ws, Source("pacs", str(phantom_root / "pacs"), "internal", labels=["csv:labels.csv"]))
    ingest_source(ws, "pacs", batch_size=4)
    before = snapshot(ws)
    assert len(list(ws.parts_dir.iterdir())) == 25
    assert compact(ws) == (25, 1)
    assert snapshot(ws) == before
    assert len(list(ws.lineage_dir.glob("*.parquet"))) == 1
    con = db.connect(ws, private=True)
    assert con.execute("SELECT count(DISTINCT file_id) FROM lineage").fetchall()[0][0] == len(before["files"])
    con.close()
    summary = ingest_source(ws, "pacs")  # re-ingest after compaction still adds nothing
    assert summary.result.files == 0 and snapshot(ws) == before


def test_readers_between_publish_and_cleanup_see_the_same_catalog(tmp_path, phantom_root):
    ws = Workspace.open(tmp_path / "w")
    add_source(ws, Source("pacs", str(phantom_root / "pacs"), "internal", labels=["csv:labels.csv"]))
    ingest_source(ws, "pacs", batch_size=10)
    before = snapshot(ws)
    old = [p for p in ws.parts_dir.iterdir()]
    keep = tmp_path / "old-parts"
    shutil.copytree(ws.parts_dir, keep)
    compact(ws)
    for p in old:  # a reader racing the cleanup sees the merged part and all the old ones
        shutil.copytree(keep / p.name, ws.parts_dir / p.name)
    assert snapshot(ws) == before


def test_compaction_during_a_run_keeps_parts_bounded_and_the_catalog_equal(tmp_path, phantom_root):
    from catalog.compact import MERGED_PREFIX

    def make(path):
        ws = Workspace.open(path)
        add_source(ws, Source("pacs", str(phantom_root / "pacs"), "internal", labels=["csv:labels.csv"]))
        add_source(ws, Source("public", str(phantom_root / "public"), "public"))
        return ws

    reference = make(tmp_path / "ref")
    reference.secret()
    for name in ("pacs", "public"):
        ingest_source(reference, name, batch_size=4)
    ws = make(tmp_path / "w")
    shutil.copy(reference.secret_path, ws.secret_path)
    for name in ("pacs", "public"):
        ingest_source(ws, name, batch_size=4, compact_parts=5)
    names = [p.name for p in ws.parts_dir.iterdir()]
    assert sum(not n.startswith(MERGED_PREFIX) for n in names) <= 5
    assert sum(n.startswith(MERGED_PREFIX) for n in names) >= 2
    assert snapshot(ws) == snapshot(reference)
