"""bench/catalog.py's synthetic catalog: the project's layout, the counts it promises, and the same answers
through the published snapshot, the derived views and bare DuckDB over flat files."""

from __future__ import annotations

from bench.catalog import PARTS, QUERIES, bare_rows, write_catalog, write_flat
from catalog import db
from catalog.publish import publish
from catalog.current import fresh_snapshot

N = 2000


def _sorted(rows: list[tuple]) -> list[tuple]:
    return sorted(rows, key=repr)


def test_the_synthetic_catalog_answers_alike_by_every_path(ws, tmp_path):
    patient = write_catalog(ws, N)
    assert len([p for p in ws.parts_dir.iterdir() if p.is_dir()]) == PARTS
    publish(ws)
    assert fresh_snapshot(ws) is not None
    with db.connection(ws) as con:
        status = dict(con.execute("SELECT status, count(*) FROM files GROUP BY ALL").fetchall())
        images, patients, unsplit = con.execute(
            "SELECT count(*), count(DISTINCT patient_key), count(*) FILTER (WHERE split IS NULL) FROM images").fetchall()[0]
        grouped, excluded = con.execute("SELECT count(dup_group), count(*) FILTER (WHERE excluded) FROM images").fetchall()[0]
        runs = con.execute("SELECT count(*) FROM runs WHERE status = 'completed'").fetchall()[0][0]
    assert status == {"ingested": N, "duplicate": N // 200, "quarantined": N // 100}
    assert images == N and N / 12 < patients < N / 6 and unsplit == 0
    assert 0.02 * N < grouped < 0.04 * N and 0.02 * N < excluded < 0.06 * N and runs == 5
    assert not any(ws.store_dir.iterdir())  # nothing on the query path needs the pixels
    write_flat(ws, tmp_path / "flat")
    for sql in QUERIES.values():
        sql = sql.format(patient=patient)
        with db.connection(ws, derived=True) as con:
            derived = _sorted(con.execute(sql).fetchall())
        assert derived and _sorted(db.query(ws, sql)[1]) == derived == _sorted(bare_rows(tmp_path / "flat", sql))
