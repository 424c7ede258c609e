"""The catalog's images, signatures and keypoints as arrays for the near-duplicate search, read from DuckDB as Arrow
batches and copied into place (no Python object per row, no second copy of the descriptors)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from catalog.errors import BrokenInvariant
from curation.dedup.keypoints import DESC
from curation.dedup.signatures import DIM


@dataclass
class CatalogImages:
    """Every image with a signature, in image id order: what a curation groups."""
    ids: np.ndarray  # S<bytes>
    lat: np.ndarray  # int8: 0 unknown, 1 L, 2 R
    series: np.ndarray  # int64: a hash of the series key, -1 for none
    shape: np.ndarray  # int32 [n, 2] rows, cols


_IMAGES_SQL = """SELECT i.image_id, CASE i.laterality WHEN 'L' THEN 1 WHEN 'R' THEN 2 ELSE 0 END::TINYINT AS lat,
                        coalesce(abs(md5_number(i.series_key) >> 65)::BIGINT, -1) AS series,
                        i.rows::INTEGER AS rows, i.cols::INTEGER AS cols
                 FROM images i SEMI JOIN signatures s USING (image_id) ORDER BY i.image_id"""


def catalog_images(con) -> CatalogImages:
    t = con.sql(_IMAGES_SQL).arrow()
    t = t.read_all() if hasattr(t, "read_all") else t
    ids = fixed_ids(t.column("image_id"))
    keep = np.r_[True, ids[1:] != ids[:-1]] if len(ids) else np.zeros(0, bool)
    shape = np.stack([t.column("rows").to_numpy(), t.column("cols").to_numpy()], axis=1).astype(np.int32)
    return CatalogImages(ids[keep], t.column("lat").to_numpy()[keep].astype(np.int8),
                         t.column("series").to_numpy()[keep].astype(np.int64), shape[keep])


def fixed_ids(col) -> np.ndarray:
    """Arrow strings as one fixed-width bytes array (S<longest>), without a Python object per row where all
    have one length (image ids: 32 hex characters)."""
    col = col.combine_chunks() if hasattr(col, "combine_chunks") else col
    n = len(col)
    if n == 0:
        return np.zeros(0, "S32")
    offsets = np.frombuffer(col.buffers()[1], dtype=np.int32)[col.offset : col.offset + n + 1]
    widths = np.diff(offsets)
    if col.null_count == 0 and (widths == widths[0]).all() and widths[0] > 0:
        data = np.frombuffer(col.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
        return data.view(f"S{widths[0]}").copy()
    return np.array([x.encode() for x in col.to_pylist()], dtype=f"S{max(1, int(widths.max()))}")


def _binary(table: pa.Table, name: str) -> np.ndarray:
    """A binary column's values end to end as one uint8 array (nulls are empty)."""
    col = table.column(name).combine_chunks()
    if len(col) == 0:
        return np.zeros(0, np.uint8)
    offsets = np.frombuffer(col.buffers()[1], dtype=np.int32)[col.offset : col.offset + len(col) + 1]
    data = col.buffers()[2]
    return np.frombuffer(data, dtype=np.uint8)[offsets[0] : offsets[-1]] if data is not None else np.zeros(0, np.uint8)


def id_table(ids: np.ndarray) -> pa.Table:
    """A fixed-width bytes array of ids as a one-column Arrow table, without a Python object per id."""
    w = ids.dtype.itemsize
    if len(ids) and (np.char.str_len(ids) == w).all():
        offsets = np.arange(len(ids) + 1, dtype=np.int32) * w
        col = pa.StringArray.from_buffers(len(ids), pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(ids)))
    else:
        col = pa.array([x.decode() for x in ids.tolist()], pa.string())
    return pa.table({"image_id": col})


def _scan(con, sql: str, wanted: np.ndarray):
    """Arrow batches of `sql` (its FROM names `wanted_ids`, the images asked for), streamed: the big binary columns
    are never sorted or joined by DuckDB, whose memory stays within its limit."""
    con.register("wanted_ids", id_table(wanted))
    try:
        for batch in con.sql(sql).to_arrow_reader(16384):
            yield pa.Table.from_batches([batch])
    finally:
        con.unregister("wanted_ids")


def _positions(got: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the position in `wanted` (sorted) of each of `got`, whether it is there)."""
    pos = np.searchsorted(wanted, got)
    ok = pos < len(wanted)
    ok[ok] = wanted[pos[ok]] == got[ok]
    return np.minimum(pos, max(len(wanted) - 1, 0)), ok


def signatures_of(con, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(emb, flip): float16 [n, DIM] of the images `wanted` (sorted), in that order, each batch copied into place."""
    emb, flip = (np.zeros((len(wanted), DIM), np.float16) for _ in range(2))
    seen = np.zeros(len(wanted), bool)
    for t in _scan(con, "SELECT image_id, emb, emb_flip FROM signatures SEMI JOIN wanted_ids USING (image_id)",
                   wanted):
        pos, _ = _positions(fixed_ids(t.column("image_id")), wanted)
        emb[pos] = _binary(t, "emb").view(np.float16).reshape(-1, DIM)
        flip[pos] = _binary(t, "emb_flip").view(np.float16).reshape(-1, DIM)
        seen[pos] = True
    if not seen.all():
        raise BrokenInvariant(f"{int((~seen).sum())} images without a signature")
    return emb, flip


def keypoints_of(con, wanted: np.ndarray, reserve) -> np.ndarray:
    """The keypoints of the images `wanted` (sorted), in that order, into the arrays `reserve(rows)` returns
    ({"desc": [rows, 128] uint8, "kp": [rows, 4] float32}, writable: in memory, or a new state's files); returns
    each image's count (0 where none were found). Two scans: the counts, then the rows, each batch copied to its
    place, so that memory holds one batch, not the catalog's descriptors twice."""
    nkp = np.zeros(len(wanted), np.int64)
    for t in _scan(con, "SELECT image_id, n FROM keypoints SEMI JOIN wanted_ids USING (image_id)", wanted):
        pos, _ = _positions(fixed_ids(t.column("image_id")), wanted)
        nkp[pos] = t.column("n").to_numpy(zero_copy_only=False)
    starts = np.r_[0, np.cumsum(nkp)]
    out = reserve(int(starts[-1]))
    if not starts[-1]:
        return nkp
    for t in _scan(con, "SELECT image_id, n, kp, k.desc FROM keypoints k SEMI JOIN wanted_ids USING (image_id)",
                   wanted):
        pos, _ = _positions(fixed_ids(t.column("image_id")), wanted)
        n = t.column("n").to_numpy(zero_copy_only=False).astype(np.int64)
        if (n != nkp[pos]).any():  # an image whose keypoints were read twice, differently
            raise BrokenInvariant("keypoints read differently in two scans")
        rows = np.repeat(starts[pos], n) + np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
        out["desc"][rows] = _binary(t, "desc").reshape(-1, DESC)
        out["kp"][rows] = _binary(t, "kp").view(np.float32).reshape(-1, 4)
    return nkp


def image_features(con, ids: np.ndarray, keypoints: bool) -> dict[str, np.ndarray]:
    """emb, flip (float16 [n, DIM]) and, with `keypoints`, nkp, kp, desc of the images `ids` (sorted), in that
    order: a few images (an incremental run's new ones)."""
    emb, flip = signatures_of(con, ids)
    out = {"ids": ids, "emb": emb, "flip": flip}
    if keypoints:
        held = {}
        out["nkp"] = keypoints_of(con, ids, lambda rows: held.update(
            desc=np.zeros((rows, DESC), np.uint8), kp=np.zeros((rows, 4), np.float32)) or held)
        out |= held
    return out
