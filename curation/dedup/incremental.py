"""Near-duplicate groups kept up to date: a full run searches the whole catalog and saves its searches
(curation/dedup/index.py); an incremental run queries only the images new since then against everything, adds
them to the searches, and folds what it finds into the saved groups and best matches.

Why the incremental groups are the full run's:
  - the global signature search is a threshold (range) search and cosine is symmetric: every accepted pair
    that involves a new image is found from the new image's side, plain against plain, the new image's mirror
    against everyone, and everyone's mirror against the new image (a mirror search of its own: the projection
    does not commute with the mirror, so cos(flip a, b) is not cos(flip b, a)); pairs of two old images are
    the ones found before. With the exact search (below `exact_below` images) this is the full run's edge set
    exactly; with IVF both are the same approximation of it.
  - groups are union-find over edges, so the old groups joined by the new edges are the groups of all edges;
    the crop search skips pairs the *global* edges already joined, as a full run does (kept apart: global_group).
  - each image's recorded match follows DupGraph's rules whatever the order the edges arrive in: a global match
    (most similar, ties by the other's image id, plain before mirrored) over a crop match, a plain crop over a
    mirrored one, each the most similar (ties by the pair's image ids); a new edge replaces an image's match only
    where the full run would have chosen it.
  - ordering and tie-breaks use image ids, never positions: the state keeps images in arrival order.

Where the incremental run only approximates a full run: the crop search's votes come from each descriptor's k
nearest descriptors (k = neighbours + 1), and only the new images' descriptors ask. A new descriptor that an old
one would have counted among its k nearest, but not the other way round, is a vote the incremental run misses;
and a new descriptor can push an old one out of another old descriptor's k nearest, a vote a full run would lose
while the incremental run keeps the old pair's verdict. Both need a descriptor with more than k close
neighbours (the k cap binding); where it does not, the votes, and so the crop pairs, are the full run's.
`ortho curate --full` rebuilds everything.

A full run happens when asked (`--full`), on the first curation, and whenever the saved state cannot be
extended: a dedup setting or crop_match.FEATURES_VERSION changed, images were removed from the catalog or an image's
laterality or series changed, a search would change mode (exact <-> IVF) or has grown to 4x the size its IVF
index was trained at, or the state is missing or inconsistent.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from catalog.store import ImageStore
from catalog.workspace import Workspace
from curation.dedup import crop_match
from curation.dedup.index import CurationIndex, IndexWriter, recorded_settings
from curation.dedup.search import METHODS, DedupConfig, DupGraph, NeighbourSearch, accepted, add_crop_edges, dup_graph
from curation.dedup.signatures import DIM
from curation.dedup.union_find import UnionFind

log = logging.getLogger("ortho.curate")

GLOBAL, CROP, CROP_FLIP, NONE = 0, 1, 2, 3  # classes of a recorded match, in the order DupGraph prefers them
OUTGROWN = 4  # an IVF index is rebuilt once its search holds this many times what it was trained on
MERGE_DELTA = 0.25  # a delta layer larger than this share of its base is merged into a new base


@dataclass
class CatalogImages:
    """Every image with a signature, in image id order: what a curation groups."""
    ids: np.ndarray  # S<bytes>
    lat: np.ndarray  # int8: 0 unknown, 1 L, 2 R
    series: np.ndarray  # int64: a hash of the series key, -1 for none
    shape: np.ndarray  # int32 [n, 2] rows, cols


@dataclass
class Grouping:
    """The outcome, per image in `ids` order (the state's): groups and recorded matches."""
    ids: np.ndarray
    group: np.ndarray
    best_other: np.ndarray
    best_sim: np.ndarray
    best_method: np.ndarray
    mode: str  # full | incremental
    reason: str  # why a full run ("" for an incremental one)
    queried: int  # images searched against the catalog
    crop_search: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------------------
# Reading the catalog

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
        raise RuntimeError(f"{int((~seen).sum())} images without a signature")
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
            raise RuntimeError("keypoints read differently in two scans")
        rows = np.repeat(starts[pos], n) + np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
        out["desc"][rows] = _binary(t, "desc").reshape(-1, crop_match.DESC)
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
            desc=np.zeros((rows, crop_match.DESC), np.uint8), kp=np.zeros((rows, 4), np.float32)) or held)
        out |= held
    return out


# ------------------------------------------------------------------------------------------------------------
# Deciding


def extension(state: CurationIndex | None, why: str, catalog: CatalogImages,
              cfg: DedupConfig) -> tuple[str, np.ndarray | None]:
    """("", positions in `catalog` of the images `state` lacks) when an incremental run can extend it; else (the
    reason for a full run, None). `why`: the reason when there is no state."""
    if state is None:
        return why, None
    recorded, wanted = state.manifest["settings"], recorded_settings(cfg)
    if recorded.get("features_version") != wanted["features_version"]:
        return "features_changed", None
    if recorded != wanted:
        return "settings_changed", None
    old = state.array("ids")
    if len(old) and catalog.ids.dtype.itemsize != old.dtype.itemsize:
        return "index_inconsistent", None
    pos = np.searchsorted(catalog.ids, old)
    found = pos < len(catalog.ids)
    found[found] = catalog.ids[pos[found]] == old[found]
    if not found.all():
        return "images_removed", None
    if (catalog.lat[pos] != state.array("lat")).any() or (catalog.series[pos] != state.array("series")).any():
        return "images_changed", None
    new = np.ones(len(catalog.ids), bool)
    new[pos] = False
    return "", np.flatnonzero(new)


def growth_blocker(state: CurationIndex, images: int, new_keypoints: int, cfg: DedupConfig) -> str:
    """Why the grown catalog needs a full run ("" when it does not): a search would change mode (exact <-> IVF), or
    an IVF search would hold OUTGROWN times what it was trained on."""
    m = state.keypoints + new_keypoints
    modes = {"global": _global_mode(images, cfg)} | ({"crops": _crops_mode(m, cfg)} if cfg.crops.enabled else {})
    if modes != state.manifest["modes"]:
        return "search_mode_changed"
    trained = state.manifest["trained"]
    for search, size in (("global", images), ("crops", m)):
        if modes.get(search) == "ivf" and size > OUTGROWN * trained.get(search, size):
            return "index_outgrown"
    return ""


def unchanged(state: CurationIndex) -> Grouping:
    """The saved grouping, when no image is new."""
    g = state.graph()
    return Grouping(np.asarray(state.array("ids")), g["group"], g["best_other"], g["best_sim"], g["best_method"],
                    "incremental", "", 0)


def _global_mode(n: int, cfg: DedupConfig) -> str:
    return "ivf" if n >= cfg.exact_below else "exact"


def _crops_mode(m: int, cfg: DedupConfig) -> str:
    return "ivf" if crop_match.searched_by_ivf(m, cfg.crops) else "exact"


# ------------------------------------------------------------------------------------------------------------
# The full run


def full_run(con, ws: Workspace, cfg: DedupConfig, run_id: str, catalog: CatalogImages,
             reason: str) -> Grouping:
    """Every image against every image (dup_graph, then the crop search), its searches saved. The
    catalog's features are written into the new state first and searched there, memory-mapped."""
    t0 = time.perf_counter()
    n = len(catalog.ids)
    writer = IndexWriter.new_build(ws, run_id, recorded_settings(cfg), cfg.crops.enabled,
                                   catalog.ids.dtype.itemsize if n else 32)
    emb, flip = signatures_of(con, catalog.ids)
    nkp = keypoints_of(con, catalog.ids, lambda rows: writer.reserve(rows, "keypoints")) if cfg.crops.enabled \
        else np.zeros(n, np.int64)
    writer.append({"ids": catalog.ids, "emb": emb, "flip": flip, "lat": catalog.lat, "series": catalog.series,
                   "shape": catalog.shape, "nkp": nkp})
    t1 = time.perf_counter()
    search = NeighbourSearch(emb, cfg) if n else None
    lat = [{1: "L", 2: "R"}.get(int(x)) for x in catalog.lat]
    series = [int(s) if s >= 0 else None for s in catalog.series]
    graph = dup_graph(emb, flip, lat, series, cfg, search=search)
    global_group = graph.group.copy()
    writer.manifest["modes"]["global"] = _global_mode(n, cfg)
    if search is not None and search.index is not None:
        _save_global(writer, search, flip, n)
    del search, emb
    t2 = time.perf_counter()
    crop_search = _full_crop_pass(writer, ws, catalog, graph, cfg) if cfg.crops.enabled else {}
    t3 = time.perf_counter()
    best_method = np.where(graph.best_other >= 0, graph.best_method, -1).astype(np.int8)
    arrays = {"group": graph.group, "global_group": global_group, "best_other": graph.best_other,
              "best_sim": graph.best_similarity.astype(np.float32), "best_method": best_method}
    writer.graph(arrays)
    writer.commit()
    t4 = time.perf_counter()
    return Grouping(catalog.ids, graph.group, graph.best_other, arrays["best_sim"], best_method, "full", reason, n,
                    crop_search, {"read_s": t1 - t0, "global_s": t2 - t1, "crops_s": t3 - t2, "save_s": t4 - t3})


def _save_global(writer: IndexWriter, search: NeighbourSearch, flip: np.ndarray, n: int) -> None:
    """The IVF index of the plain embeddings, and one of the mirrored ones over the same training."""
    import faiss

    writer.faiss("global", "empty", search.trained)
    writer.faiss("global", "base", search.index)
    mirrored = faiss.clone_index(search.trained)
    for s in range(0, n, 65536):
        mirrored.add(np.ascontiguousarray(flip[s : s + 65536], dtype=np.float32))
    writer.faiss("flip", "empty", search.trained)
    writer.faiss("flip", "base", mirrored)
    writer.manifest["trained"]["global"] = n


def _full_crop_pass(writer: IndexWriter, ws: Workspace, catalog: CatalogImages, graph: DupGraph,
                    cfg: DedupConfig) -> dict:
    view = writer.state
    desc, kp, sizes = view.array("desc"), view.array("kp"), np.asarray(view.array("nkp"), np.int64)
    m = len(desc)
    writer.manifest["modes"]["crops"] = _crops_mode(m, cfg)
    vote = crop_match.vote_index(desc, cfg.crops) if m else None
    ivf = vote is not None and writer.manifest["modes"]["crops"] == "ivf"
    if ivf:
        writer.faiss("crops", "empty", vote[0])
        writer.pca(vote[1])
        writer.manifest["trained"]["crops"] = m
    if vote is not None:
        crop_match.filled(vote, desc)
    store = ImageStore(ws.store_dir)
    ids = catalog.ids
    edges, counts = crop_match.crop_edges(kp, desc, sizes, graph.apart_from_crop, lambda i: store.get(ids[i].decode()),
                                     cfg.crops, shapes=catalog.shape, index=vote)
    add_crop_edges(graph, edges)
    if ivf:
        writer.faiss("crops", "base", vote[0])
    return counts


# ------------------------------------------------------------------------------------------------------------
# The incremental run


def incremental_run(con, ws: Workspace, cfg: DedupConfig, run_id: str, catalog: CatalogImages,
                    state: CurationIndex, new_pos: np.ndarray, feats: dict) -> Grouping:
    """The images at `new_pos` of `catalog` (their features `feats`) queried against everything and added."""
    t0 = time.perf_counter()
    writer = IndexWriter.extending(state, run_id)
    old = state.images
    writer.append({"ids": catalog.ids[new_pos], "emb": feats["emb"], "flip": feats["flip"],
                   "lat": catalog.lat[new_pos], "series": catalog.series[new_pos], "shape": catalog.shape[new_pos],
                   "nkp": feats["nkp"] if cfg.crops.enabled else np.zeros(len(new_pos), np.int16)})
    if cfg.crops.enabled:
        writer.append({"desc": feats["desc"], "kp": feats["kp"]}, "keypoints")
    view = writer.state
    n = view.images
    ids = view.array("ids")
    order = np.argsort(ids, kind="stable")  # state positions in id order
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n)
    g = state.graph()
    for name, fill in (("group", None), ("global_group", None), ("best_other", -1), ("best_sim", -np.inf),
                       ("best_method", -1)):
        extra = np.arange(old, n) if fill is None else np.full(n - old, fill)
        g[name] = np.concatenate([g[name], extra.astype(g[name].dtype)])
    lat, series = np.asarray(view.array("lat")), np.asarray(view.array("series"))
    t1 = time.perf_counter()

    a, b, sims, flipped = _new_global_pairs(writer, state, view, cfg, old, lat, series)
    _fold_global(g, a, b, sims, flipped, rank)
    t2 = time.perf_counter()
    crop_search = {}
    if cfg.crops.enabled:
        crop_search = _incremental_crop_pass(writer, ws, state, view, g, cfg, old, order, rank, lat, series)
    t3 = time.perf_counter()
    writer.graph(g)
    writer.commit()
    t4 = time.perf_counter()
    return Grouping(ids, g["group"], g["best_other"], g["best_sim"], g["best_method"], "incremental", "",
                    n - old, crop_search,
                    {"read_s": t1 - t0, "global_s": t2 - t1, "crops_s": t3 - t2, "save_s": t4 - t3})


def _new_global_pairs(writer: IndexWriter, state: CurationIndex, view: CurationIndex, cfg: DedupConfig,
                      old: int, lat: np.ndarray, series: np.ndarray) -> tuple[np.ndarray, ...]:
    """Accepted global pairs (a < b, cosine, mirrored) that involve a new image (positions >= `old`)."""
    n = view.images
    emb_new = np.asarray(view.array("emb")[old:], np.float32)
    flip_new = np.asarray(view.array("flip")[old:], np.float32)
    layers = {}
    if view.manifest["modes"]["global"] == "exact":
        plain = NeighbourSearch(np.asarray(view.array("emb"), np.float32), cfg)
        mirrors = NeighbourSearch(np.asarray(view.array("flip"), np.float32), cfg)
    else:
        layers = {s: state.searcher(s) for s in ("global", "flip")}
        for layer in layers.values():
            _tune(layer, cfg.nprobe)
        layers["global"].add(emb_new)
        layers["flip"].add(flip_new)
        plain = NeighbourSearch(view.array("emb"), cfg, index=layers["global"])
        mirrors = NeighbourSearch(view.array("flip"), cfg, index=layers["flip"])
    low = min(cfg.threshold, cfg.same_series_threshold)
    # plain against plain; the new mirrors against everyone; everyone's mirror against the new (old ones only:
    # two new images' mirrored pair is the second pass's)
    passes = [(False, plain, emb_new, n), (True, plain, flip_new, n), (True, mirrors, emb_new, old)]
    found = []
    for flipped, search, queries, below in (passes if cfg.use_flip else passes[:1]):
        for qi, ji, s in search.range_blocks(queries, low, first=old):
            qi = qi + old
            keep = ji < below
            x, y, s, _ = accepted(qi[keep], ji[keep], s[keep], series, lat, cfg)
            found.append((x, y, s, np.full(len(x), flipped)))
    for s, layer in layers.items():  # IVF only, and after the search (_save_layer may empty the delta)
        _save_layer(writer, s, layer)
    if not found:
        z = np.zeros(0, np.int64)
        return z, z, np.zeros(0, np.float32), np.zeros(0, bool)
    return tuple(np.concatenate([f[i] for f in found]) for i in range(4))


def _save_layer(writer: IndexWriter, search: str, layer) -> None:
    """The delta as this run's, or (past MERGE_DELTA of the base) base and delta merged into a new base. faiss's
    merge_from moves the delta's vectors out of `layer`: call this after the layer's last search."""
    import faiss

    if layer.delta.ntotal <= MERGE_DELTA * max(1, layer.base.ntotal):
        writer.faiss(search, "delta", layer.delta)
        return
    merged = faiss.read_index(str(writer.dir / writer.manifest["faiss"][search]["base"]))
    merged.merge_from(layer.delta, merged.ntotal)
    writer.faiss(search, "base", merged)


def _fold_global(g: dict, a: np.ndarray, b: np.ndarray, sims: np.ndarray, flipped: np.ndarray,
                 rank: np.ndarray) -> None:
    """New global edges into the groups and the recorded matches (DupGraph's rules, ties by image id)."""
    if not len(a):
        return
    g["group"] = merged_groups(g["group"], a, b)
    g["global_group"] = merged_groups(g["global_group"], a, b)
    x, other = np.r_[a, b], np.r_[b, a]
    s, f = np.r_[sims, sims].astype(np.float32), np.r_[flipped, flipped].astype(np.int8)
    key = (-s, rank[other], f)  # the full run's order: most similar, lower id, plain before mirrored
    _replace_best(g, x, other, s, np.where(f == 1, 1, 0), key, GLOBAL, rank)


def _replace_best(g: dict, x: np.ndarray, other: np.ndarray, sims: np.ndarray, method: np.ndarray, key: tuple,
                  cls: int, rank: np.ndarray) -> None:
    """Each x's best candidate (the smallest `key`) replaces its recorded match where a full run would prefer it:
    a recorded match of a later class (GLOBAL < CROP < CROP_FLIP < NONE), or one of this class with a larger key."""
    order = np.lexsort(tuple(reversed(key)) + (x,))
    order = order[np.r_[True, x[order][1:] != x[order][:-1]]]
    x, other, sims, method = x[order], other[order], sims[order], method[order]
    cand = tuple(k[order] for k in key)
    prev_cls = _classes(g["best_method"][x], g["best_other"][x])
    better = prev_cls > cls
    same = prev_cls == cls
    if same.any():
        stored = _stored_key(g, x, cls, rank)
        better |= same & _less(cand, stored)
    x, other, sims, method = x[better], other[better], sims[better], method[better]
    g["best_other"][x], g["best_sim"][x] = other, sims
    g["best_method"][x] = method


def _classes(method: np.ndarray, other: np.ndarray) -> np.ndarray:
    cls = np.select([method <= 1, method == METHODS.index("crop")], [GLOBAL, CROP], CROP_FLIP)
    return np.where(other < 0, NONE, cls)


def _stored_key(g: dict, x: np.ndarray, cls: int, rank: np.ndarray) -> tuple:
    other = np.maximum(g["best_other"][x], 0)
    s = g["best_sim"][x].astype(np.float32)
    if cls == GLOBAL:
        return -s, rank[other], (g["best_method"][x] == 1).astype(np.int8)
    return -s, np.minimum(rank[x], rank[other]), np.maximum(rank[x], rank[other])


def _less(a: tuple, b: tuple) -> np.ndarray:
    """Element-wise lexicographic a < b over tuples of arrays."""
    out = np.zeros(len(a[0]), bool)
    tied = np.ones(len(a[0]), bool)
    for u, v in zip(a, b):
        out |= tied & (u < v)
        tied &= u == v
    return out


def merged_groups(group: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`group` (each image's smallest member position) with the groups of each pair (a, b) joined."""
    labels, inv = np.unique(np.r_[group[a], group[b]], return_inverse=True)
    forest = UnionFind(list(range(len(labels))))
    for u, v in zip(inv[: len(a)].tolist(), inv[len(a) :].tolist()):
        forest.union(u, v)
    roots = labels[forest.roots()]  # labels are sorted: a root is its group's smallest label
    pos = np.searchsorted(labels, group)
    hit = pos < len(labels)
    hit[hit] = labels[pos[hit]] == group[hit]
    out = group.copy()
    out[hit] = roots[pos[hit]]
    return out


def _incremental_crop_pass(writer: IndexWriter, ws: Workspace, state: CurationIndex, view: CurationIndex, g: dict,
                           cfg: DedupConfig, old: int, order: np.ndarray, rank: np.ndarray,
                           lat: np.ndarray, series: np.ndarray) -> dict:
    """The new images' descriptors ask the vote search over everyone's; verified pairs join the groups. Images go
    by their rank in id order inside the crop search, so that pairs are oriented as a full run orients them."""
    n, m_old = view.images, state.keypoints
    desc, kp = view.array("desc"), view.array("kp")
    sizes = np.asarray(view.array("nkp"), np.int64)
    layer = None
    if view.manifest["modes"]["crops"] == "exact":
        vote = crop_match.filled(crop_match.vote_index(np.asarray(desc), cfg.crops), desc) if len(desc) else None
    else:
        layer, project = state.searcher("crops"), state.projection()
        _tune(layer, cfg.crops.nprobe, max(2 * cfg.crops.nprobe, 16))  # as crop_match._trained_ivf
        new_desc = desc[m_old:]
        for s in range(0, len(new_desc), 65536):
            layer.add(project(new_desc[s : s + 65536]))
        vote = (layer, project, crop_match.ivf_cosine)
    apart = DupGraph(g["global_group"], g["best_other"], g["best_sim"], g["best_method"], 0,
                              series_code=series, laterality_code=lat)
    ids = view.array("ids")
    store = ImageStore(ws.store_dir)
    shapes = np.asarray(view.array("shape"), np.int64)[order]
    asking = np.arange(n) >= old
    edges, counts = crop_match.crop_edges(kp, desc, sizes, lambda a, b: apart.apart_from_crop(order[a], order[b]),
                                     lambda r: store.get(ids[order[r]].decode()), cfg.crops, shapes=shapes,
                                     rank=rank, asking=asking, index=vote)
    if layer is not None:
        _save_layer(writer, "crops", layer)  # after the search: it may empty the delta
    for cls, mirrored, method in ((CROP, False, "crop"), (CROP_FLIP, True, "crop_flip")):
        chosen = [e for e in edges if e.mirrored == mirrored]
        if not chosen:
            continue
        ra = np.array([e.a for e in chosen], np.int64)
        rb = np.array([e.b for e in chosen], np.int64)
        s = np.array([e.similarity for e in chosen], np.float32)
        a, b = order[ra], order[rb]
        g["group"] = merged_groups(g["group"], a, b)
        x, other = np.r_[a, b], np.r_[b, a]
        key = (np.r_[-s, -s], np.r_[ra, ra], np.r_[rb, rb])  # add_edges' order: most similar, then the pair's ids
        _replace_best(g, x, other, np.r_[s, s], np.full(len(x), METHODS.index(method)), key, cls, rank)
    return counts


def _tune(layer, nprobe: int, ef_search: int | None = None) -> None:
    """The search settings on both layers (as the full run set them; a setting changed since forces a full run)."""
    import faiss

    for index in (layer.base, layer.delta):
        ivf = faiss.extract_index_ivf(index)
        ivf.nprobe = nprobe
        if ef_search is not None:
            faiss.downcast_index(ivf.quantizer).hnsw.efSearch = ef_search
