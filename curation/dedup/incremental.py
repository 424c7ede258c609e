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
  - each image's recorded match follows one rule whatever the order the edges arrive in (groups.py).
  - ordering and tie-breaks use image ids, never positions: the state keeps images in arrival order.

Where the incremental run only approximates a full run: the crop search's votes come from each descriptor's k
nearest descriptors (k = neighbours + 1), and only the new images' descriptors ask. A new descriptor that an old
one would have counted among its k nearest, but not the other way round, is a vote the incremental run misses;
and a new descriptor can push an old one out of another old descriptor's k nearest, a vote a full run would lose
while the incremental run keeps the old pair's verdict. Both need a descriptor with more than k close
neighbours (the k cap binding); where it does not, the votes, and so the crop pairs, are the full run's.
`ortho curate --full` rebuilds everything.

A full run happens when asked (`--full`), on the first curation, and whenever the saved state cannot be
extended: a dedup setting or keypoints.FEATURES_VERSION changed, images were removed from the catalog or an image's
laterality or series changed, a search would change mode (exact <-> IVF) or has grown to 4x the size its IVF
index was trained at, or the state is missing or inconsistent.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from catalog.store import ImageStore
from catalog.workspace import Workspace
from curation.dedup.catalog_arrays import CatalogImages, catalog_images, image_features, keypoints_of, signatures_of
from curation.dedup.config import DedupConfig
from curation.dedup.crop_match import crop_edges
from curation.dedup.descriptor_votes import filled, ivf_cosine, searched_by_ivf, vote_index
from curation.dedup.groups import DupGroups
from curation.dedup.index import CurationIndex, IndexWriter, recorded_settings
from curation.dedup.search import NeighbourSearch, accepted, dup_graph

log = logging.getLogger("ortho.curate")

OUTGROWN = 4  # an IVF index is rebuilt once its search holds this many times what it was trained on
MERGE_DELTA = 0.25  # a delta layer larger than this share of its base is merged into a new base


@dataclass
class SearchRun:
    """How one curation's near-duplicate search went, and the groups it left."""
    groups: DupGroups  # per image of the state, in its order (ids known)
    mode: str  # full | incremental
    reason: str  # why a full run ("" for an incremental one)
    queried: int  # images searched against the catalog
    crop_search: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)


def search_run(con, ws: Workspace, cfg: DedupConfig, run_id: str, full: bool = False) -> SearchRun | None:
    """The near-duplicate groups of every image with a signature (None when there is none): the saved ones
    extended by the new images, or a full run when asked (`full`), or when the saved state cannot be extended."""
    t0 = time.perf_counter()
    catalog = catalog_images(con)
    if not len(catalog.ids):
        return None
    state, why = (None, "requested") if full else CurationIndex.current(ws)
    reason, new_pos = extension(state, why, catalog, cfg)
    t1 = time.perf_counter()
    if not reason:
        if not len(new_pos):
            return unchanged(state)
        feats = image_features(con, catalog.ids[new_pos], cfg.crops.enabled)
        reason = growth_blocker(state, len(catalog.ids), len(feats.get("desc", ())), cfg)
    t2 = time.perf_counter()
    if reason:
        log.info("near-duplicate search: full run (%s)", reason)
        g = full_run(con, ws, cfg, run_id, catalog, reason)
    else:
        log.info("near-duplicate search: %d new images queried against %d", len(new_pos), len(catalog.ids))
        try:
            g = incremental_run(con, ws, cfg, run_id, catalog, state, new_pos, feats)
        except (OSError, RuntimeError) as e:  # a saved index faiss or numpy cannot read: rebuilt, never trusted
            log.warning("near-duplicate search: the saved searches could not be read (%s): full run",
                        type(e).__name__)
            g = full_run(con, ws, cfg, run_id, catalog, "index_unreadable")
    g.timings = {"catalog_s": t1 - t0, "new_features_s": t2 - t1, **g.timings}
    return g


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


def unchanged(state: CurationIndex) -> SearchRun:
    """The saved groups, when no image is new."""
    return SearchRun(state.groups(ids=np.asarray(state.array("ids"))), "incremental", "", 0)


def _global_mode(n: int, cfg: DedupConfig) -> str:
    return "ivf" if n >= cfg.exact_below else "exact"


def _crops_mode(m: int, cfg: DedupConfig) -> str:
    return "ivf" if searched_by_ivf(m, cfg.crops) else "exact"


# ------------------------------------------------------------------------------------------------------------
# The full run


def full_run(con, ws: Workspace, cfg: DedupConfig, run_id: str, catalog: CatalogImages,
             reason: str) -> SearchRun:
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
    graph.ids = catalog.ids
    writer.manifest["modes"]["global"] = _global_mode(n, cfg)
    if search is not None and search.index is not None:
        _save_global(writer, search, flip, n)
    del search, emb
    t2 = time.perf_counter()
    crop_search = _full_crop_pass(writer, ws, catalog, graph, cfg) if cfg.crops.enabled else {}
    t3 = time.perf_counter()
    writer.groups(graph)
    writer.commit()
    t4 = time.perf_counter()
    return SearchRun(graph, "full", reason, n, crop_search,
                     {"read_s": t1 - t0, "global_s": t2 - t1, "crops_s": t3 - t2, "save_s": t4 - t3})


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


def _full_crop_pass(writer: IndexWriter, ws: Workspace, catalog: CatalogImages, graph: DupGroups,
                    cfg: DedupConfig) -> dict:
    view = writer.state
    desc, kp, sizes = view.array("desc"), view.array("kp"), np.asarray(view.array("nkp"), np.int64)
    m = len(desc)
    writer.manifest["modes"]["crops"] = _crops_mode(m, cfg)
    vote = vote_index(desc, cfg.crops) if m else None
    ivf = vote is not None and writer.manifest["modes"]["crops"] == "ivf"
    if ivf:
        writer.faiss("crops", "empty", vote[0])
        writer.pca(vote[1])
        writer.manifest["trained"]["crops"] = m
    if vote is not None:
        filled(vote, desc)
    store = ImageStore(ws.store_dir)
    ids = catalog.ids
    edges, counts = crop_edges(kp, desc, sizes, graph.apart_from_crop, lambda i: store.get(ids[i].decode()),
                               cfg.crops, shapes=catalog.shape, index=vote)
    graph.add_crop_edges(edges)
    if ivf:
        writer.faiss("crops", "base", vote[0])
    return counts


# ------------------------------------------------------------------------------------------------------------
# The incremental run


def incremental_run(con, ws: Workspace, cfg: DedupConfig, run_id: str, catalog: CatalogImages,
                    state: CurationIndex, new_pos: np.ndarray, feats: dict) -> SearchRun:
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
    lat, series = np.asarray(view.array("lat")), np.asarray(view.array("series"))
    g = state.groups(ids=ids, series_code=series, laterality_code=lat)
    g.extended(n)
    t1 = time.perf_counter()

    a, b, sims, flipped = _new_global_pairs(writer, state, view, cfg, old, lat, series)
    g.fold_global(a, b, sims, flipped, rank)
    t2 = time.perf_counter()
    crop_search = {}
    if cfg.crops.enabled:
        crop_search = _incremental_crop_pass(writer, ws, state, view, g, cfg, old, order, rank)
    t3 = time.perf_counter()
    writer.groups(g)
    writer.commit()
    t4 = time.perf_counter()
    return SearchRun(g, "incremental", "", n - old, crop_search,
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


def _incremental_crop_pass(writer: IndexWriter, ws: Workspace, state: CurationIndex, view: CurationIndex,
                           g: DupGroups, cfg: DedupConfig, old: int, order: np.ndarray, rank: np.ndarray) -> dict:
    """The new images' descriptors ask the vote search over everyone's; verified pairs join the groups. Images go
    by their rank in id order inside the crop search, so that pairs are oriented as a full run orients them."""
    n, m_old = view.images, state.keypoints
    desc, kp = view.array("desc"), view.array("kp")
    sizes = np.asarray(view.array("nkp"), np.int64)
    layer = None
    if view.manifest["modes"]["crops"] == "exact":
        vote = filled(vote_index(np.asarray(desc), cfg.crops), desc) if len(desc) else None
    else:
        layer, project = state.searcher("crops"), state.projection()
        _tune(layer, cfg.crops.nprobe, max(2 * cfg.crops.nprobe, 16))  # as descriptor_votes._trained_ivf
        new_desc = desc[m_old:]
        for s in range(0, len(new_desc), 65536):
            layer.add(project(new_desc[s : s + 65536]))
        vote = (layer, project, ivf_cosine)
    ids = view.array("ids")
    store = ImageStore(ws.store_dir)
    shapes = np.asarray(view.array("shape"), np.int64)[order]
    asking = np.arange(n) >= old
    edges, counts = crop_edges(kp, desc, sizes, lambda a, b: g.apart_from_crop(order[a], order[b]),
                               lambda r: store.get(ids[order[r]].decode()), cfg.crops, shapes=shapes,
                               rank=rank, asking=asking, index=vote)
    if layer is not None:
        _save_layer(writer, "crops", layer)  # after the search: it may empty the delta
    for mirrored in (False, True):
        chosen = [e for e in edges if e.mirrored == mirrored]
        g.fold_crop(np.array([e.a for e in chosen], np.int64), np.array([e.b for e in chosen], np.int64),
                    np.array([e.similarity for e in chosen], np.float32), mirrored, order, rank)
    return counts


def _tune(layer, nprobe: int, ef_search: int | None = None) -> None:
    """The search settings on both layers (as the full run set them; a setting changed since forces a full run)."""
    import faiss

    for index in (layer.base, layer.delta):
        ivf = faiss.extract_index_ivf(index)
        ivf.nprobe = nprobe
        if ef_search is not None:
            faiss.downcast_index(ivf.quantizer).hnsw.efSearch = ef_search

