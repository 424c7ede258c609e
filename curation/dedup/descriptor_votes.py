"""Pass 1 of the crop search (crop_match.py): descriptor votes. Every descriptor's few nearest descriptors
(faiss: exact below `exact_below` descriptors, above a PCA-64 IVF index with an HNSW coarse quantizer, neighbours
re-scored exactly); a neighbour closer than `descriptor_similarity` in another image is a vote for that image
pair. Each image also asks with its descriptors as they would be in its mirror image (keypoints.MIRROR), so a
flipped and cropped re-export is found too.
"""

from __future__ import annotations

import functools
from typing import Callable, Iterator

import numpy as np

from curation.dedup.config import CropConfig
from curation.dedup.keypoints import DESC, MIRROR, unit

ADD_BLOCK = 65536  # descriptors added to the vote index at a time: bounds the projected copy in memory


def votes(desc: np.ndarray, owner: np.ndarray, cfg: CropConfig, block: int = ADD_BLOCK,
          skip: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The plain pass of vote_passes."""
    return next(vote_passes(desc, owner, cfg, block, skip, mirrors=(False,)))


def vote_passes(desc: np.ndarray, owner: np.ndarray, cfg: CropConfig, block: int = ADD_BLOCK,
                skip: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
                mirrors: tuple[bool, ...] = (False, True), index: tuple | None = None,
                queries: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per pass (plain, then mirrored), descriptor matches between different images: arrays
    (descriptor q, descriptor j, cosine), q's owner < j's owner, each match once, image pairs `skip`
    rejects left out as they are found (so that a catalog of many near-identical images, already
    grouped, holds no votes for them). Each image queries with its `query_keypoints` strongest
    descriptors (in the mirrored pass, those descriptors mirrored) against everyone's `neighbours`
    nearest. A mirrored match says: q's image mirrored matches j's; mirroring both sides, j's image
    mirrored matches q's, so the pair is kept in owner order either way.

    Below `exact_below` descriptors the search is exact. Above, it runs on a PCA projection
    (`pca_dim`, fitted on a sample) in an IVF index of about 200 descriptors per list (at most
    65,536 lists), whose centroids are trained and searched through an HNSW graph, so that cost
    grows about linearly with the catalog; neighbours the approximate search puts near the
    threshold are re-scored on the full descriptors, so `descriptor_similarity` means the same
    either way.

    `index`: a vote index already holding all of `desc` (vote_index, then filled; an incremental
    curation's persisted one, curation/dedup/index.py); `queries`: the descriptor rows that ask
    (default: every image's `query_keypoints` strongest). `desc` and `owner` may be memory maps."""
    m = len(desc)
    if m == 0:
        for _ in mirrors:
            yield np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
        return
    queries = _query_rows(owner, cfg.query_keypoints) if queries is None else queries
    k = min(cfg.neighbours + 1, m)
    index, project, approx_cosine = index if index is not None else filled(vote_index(desc, cfg), desc, block)
    for mirrored in mirrors:
        qs, js, ss = [], [], []
        step = 8192  # queries per block: their neighbours are re-scored as float32 (k x 0.5 KB each)
        for s in range(0, len(queries), step):
            q = queries[s : s + step]
            asked = desc[q][:, MIRROR] if mirrored else desc[q]
            dist, nb = index.search(project(asked), k)
            q, j, sim = _rescored_matches(desc, owner, np.repeat(q, k), nb.ravel().astype(np.int64),
                                          approx_cosine(dist.ravel()), cfg, skip, mirrored)
            qs.append(q), js.append(j), ss.append(sim)
        key = np.concatenate(qs or [np.zeros(0, np.int64)]).astype(np.int64) * m + \
            np.concatenate(js or [np.zeros(0, np.int64)])
        sim = np.concatenate(ss or [np.zeros(0, np.float32)])
        del qs, js, ss
        key, first = np.unique(key, return_index=True)  # found from both ends: keep one
        yield key // m, key % m, sim[first]


def _query_rows(owner: np.ndarray, per_image: int) -> np.ndarray:
    """Rows of each image's first `per_image` descriptors (its strongest), `owner` sorted by image."""
    m = len(owner)
    starts = np.r_[0, np.flatnonzero(np.diff(owner)) + 1]
    rank = np.arange(m) - np.repeat(starts, np.diff(np.r_[starts, m]))
    return np.flatnonzero(rank < per_image)


def vote_index(desc: np.ndarray, cfg: CropConfig) -> tuple:
    """(an empty faiss index, the projection of descriptors into it, search distance -> approximate
    cosine): exact inner products of unit descriptors, or PCA + IVF past `exact_below`."""
    import faiss

    if not searched_by_ivf(len(desc), cfg):
        return faiss.IndexFlatIP(DESC), unit, _same  # inner products of unit vectors
    rng = np.random.default_rng(0)  # draws the PCA sample first, then the IVF training sample
    project = _pca_projection(desc, cfg.pca_dim, rng)
    return _trained_ivf(desc, cfg, rng, project), project, ivf_cosine


def searched_by_ivf(descriptors: int, cfg: CropConfig) -> bool:
    return descriptors >= max(cfg.exact_below, 64 * 40)  # an IVF index needs some 40 training points per list


def ivf_cosine(d: np.ndarray) -> np.ndarray:
    """Unit vectors, so L2 order is cosine order (HNSW works in L2): cosine = 1 - d^2 / 2."""
    return 1.0 - d / 2


def _same(d: np.ndarray) -> np.ndarray:
    return d


def filled(vote: tuple, desc: np.ndarray, block: int = ADD_BLOCK) -> tuple:
    """A vote index (vote_index) with all of `desc` added, `block` rows at a time."""
    index, project, _ = vote
    for s in range(0, len(desc), block):
        index.add(project(desc[s : s + block]))
    return vote


def _pca_projection(desc: np.ndarray, pca_dim: int, rng: np.random.Generator) -> functools.partial:
    """Descriptors -> unit vectors in the top `pca_dim` principal axes of (up to) 100,000 of them."""
    m = len(desc)
    sample = unit(desc[np.sort(rng.choice(m, size=min(m, 100_000), replace=False))])
    mean = sample.mean(0)
    cov = (sample.T @ sample) / len(sample) - np.outer(mean, mean)  # 128 x 128: no centred copy, no SVD workspace
    del sample
    basis = np.linalg.eigh(cov.astype(np.float64))[1][:, ::-1][:, :pca_dim].astype(np.float32)
    return functools.partial(pca_projected, mean=mean.astype(np.float32), basis=basis)  # .keywords: saved with the index


def pca_projected(d: np.ndarray, mean: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Descriptors -> unit vectors in `basis` (128 x pca_dim) about `mean`."""
    out = np.empty((len(d), basis.shape[1]), np.float32)
    for s in range(0, len(d), 16384):  # float32 copies of 16,384 descriptors at a time
        z = (unit(d[s : s + 16384]) - mean) @ basis
        out[s : s + 16384] = z / np.maximum(np.sqrt(np.einsum("ij,ij->i", z, z)), 1e-6)[:, None]
    return out


def _trained_ivf(desc: np.ndarray, cfg: CropConfig, rng: np.random.Generator,
                 project: Callable[[np.ndarray], np.ndarray]):
    """An empty IVF index (about 200 descriptors per list) with an HNSW coarse quantizer, trained on
    40 projected descriptors per list."""
    import faiss

    m = len(desc)
    nlist = int(min(65536, max(64, m // 200)))
    index = faiss.index_factory(cfg.pca_dim, f"IVF{nlist}_HNSW32,SQ8")
    ivf = faiss.extract_index_ivf(index)
    ivf.clustering_index = faiss.IndexHNSWFlat(cfg.pca_dim, 32)
    ivf.cp.niter = 10
    faiss.downcast_index(ivf.quantizer).hnsw.efSearch = max(2 * cfg.nprobe, 16)
    index.train(project(desc[np.sort(rng.choice(m, size=min(m, 40 * nlist), replace=False))]))
    ivf.nprobe = cfg.nprobe
    return index


def _rescored_matches(desc: np.ndarray, owner: np.ndarray, q: np.ndarray, j: np.ndarray, approx: np.ndarray,
                      cfg: CropConfig, skip: Callable[[np.ndarray, np.ndarray], np.ndarray] | None,
                      mirrored: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Of the found neighbours j of descriptors q (approximate cosine `approx`; q mirrored when
    `mirrored`): those in another image whose exact cosine reaches `descriptor_similarity`, as
    (q, j, cosine) with q's owner < j's owner, pairs `skip` rejects left out."""
    ok = (j >= 0) & (approx >= cfg.descriptor_similarity - 0.1)
    q, j = q[ok], j[ok]
    ok = owner[q] != owner[j]
    q, j = q[ok], j[ok]
    asked = desc[q][:, MIRROR] if mirrored else desc[q]
    sim = np.einsum("ij,ij->i", unit(asked), unit(desc[j]))  # exact cosine of each neighbour
    ok = sim >= cfg.descriptor_similarity
    q, j, sim = q[ok], j[ok], sim[ok]
    swap = owner[q] > owner[j]
    q, j = np.where(swap, j, q), np.where(swap, q, j)
    if skip is not None:
        ok = ~skip(owner[q], owner[j])
        q, j, sim = q[ok], j[ok], sim[ok]
    return q.astype(np.int32), j.astype(np.int32), sim.astype(np.float32)
