"""Cropped re-exports: local features, candidate pairs by descriptor votes, a similarity transform
by RANSAC, and a pixel check of the aligned overlap.

Why a second method next to the global signature (curation/dedup/signatures.py): a knee's identity is in
its fine texture, and a whole-image texture correlation falls from 1.0 to 0.28 at 1% misalignment
and to 0.06 at 3% (measured on knee-xray-kl), so no single global vector survives a crop of a few
percent followed by a resize. Local features do: SIFT keypoints are found again wherever the crop
kept the content, at a scale that follows any resize, and their descriptors are normalised for
contrast. Per image, the strongest `KEYPOINTS` keypoints are kept (positions in stored pixels,
RootSIFT descriptors as uint8), computed once with the signature.

Search over the catalog, in pass order:
  1. every descriptor's few nearest descriptors (faiss: exact below `exact_below` descriptors, above
     a PCA-64 IVF index with an HNSW coarse quantizer, neighbours re-scored exactly); a neighbour
     closer than `descriptor_similarity` in another image is a vote for that image pair;
     Each image also asks with its descriptors as they would be in its mirror image (a fixed
     permutation of SIFT's bins, MIRROR), so a flipped and cropped re-export is found too;
  2. pairs with `min_votes` votes, not already in one near-duplicate group, not in one MRI series
     (neighbouring slices) and not of opposite laterality, get a similarity transform (scale,
     rotation, shift) by RANSAC over their matched keypoints (the first image's mirrored for a
     mirrored pair), refined to an affine map when its inliers show unequal scales (an export padded
     on one side, then resized back to its old size);
  3. a plausible transform (rotation within `max_rotation_deg`, scales alike, the smaller image
     mostly inside the larger one) is checked on the pixels: the overlap is resampled from both images onto one 128 x 128 grid,
     whitened (finer than the signature: a 2-pixel high-pass), and compared by cosine. Keypoints on
     the same anatomy agree geometrically between two different knees too; their texture does not.

Keypoints are found inside the image's content box (curation/dedup/borders.py): the corners of a black
pad or letterbox are the strongest keypoints of a padded export and would crowd out the anatomy's.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterator, NamedTuple

import numpy as np
from PIL import Image

from catalog.pixel_budget import PixelsRefused
from catalog.pixels import sampled_percentiles
from curation.dedup.borders import content_box
from curation.dedup.signatures import whiten

KEYPOINTS = 24
SIZE = 128  # the pixel check's grid
GRID_SIGMA = 2.0  # its high-pass, finer than the signature's 4: anatomy aligned by RANSAC correlates at coarse scales
MAX_SIDE = 256  # keypoints are found on the image reduced to this longer side (never enlarged): SIFT
# doubles its input first, so a 512-pixel side costs ~7x a 256-pixel one (measured ~100 vs ~14 ms)
DESC = 128
FEATURES_VERSION = 2  # 2: found inside the content box. Stored keypoints of another version are recomputed


def _mirror_permutation() -> np.ndarray:
    """SIFT of the mirrored image (x -> width - 1 - x) at a keypoint is the original's descriptor permuted by this.
    OpenCV lays a descriptor out as 4 x 4 spatial bins x 8 orientation bins in the keypoint's own frame, whose
    axis (the dominant gradient) the mirror keeps: the rows across that axis reverse and the orientations negate.
    Checked against SIFT on mirrored real knees (tests/curation/test_crops.py)."""
    r, c, o = np.meshgrid(np.arange(4), np.arange(4), np.arange(8), indexing="ij")
    return (((3 - r) * 4 + c) * 8 + (8 - o) % 8).reshape(-1)


MIRROR = _mirror_permutation()


@dataclass(frozen=True)
class CropConfig:
    enabled: bool = True
    neighbours: int = 4
    query_keypoints: int = 24  # each image asks with its strongest descriptors (all of them by default)
    pca_dim: int = 64  # of the IVF search (candidates re-scored on all 128 dimensions)
    descriptor_similarity: float = 0.90
    min_votes: int = 3
    min_inliers: int = 3
    max_rotation_deg: float = 15.0  # scanners and viewers rotate a few degrees; knees are never upside down
    max_anisotropy: float = 1.35  # the larger scale over the smaller, of a refined affine map
    mirror: bool = True  # also search mirrored descriptors (a flipped re-export); laterality still decides
    min_overlap: float = 0.6  # of the smaller image's area, once mapped
    # aligned texture score (aligned_similarity); measured: different real knees <= 0.39, phantom knees <= 0.34,
    # crops median 0.9
    threshold: float = 0.45
    exact_below: int = 20_000  # descriptors (about 800 images); an IVF index above (same matches, measured)
    nprobe: int = 8
    workers: int | None = None  # threads for the pixel checks (default: CPU count)


_local = threading.local()


def _sift():
    """One detector per thread (signature batches may run on threads)."""
    if not hasattr(_local, "sift"):
        import cv2

        cv2.setNumThreads(1)
        _local.sift = cv2.SIFT_create(nfeatures=KEYPOINTS, contrastThreshold=0.01)
    return _local.sift


def to_u8(pixels: np.ndarray) -> np.ndarray | None:
    """Any depth -> uint8 through the 0.5-99.5 percentile window (robust to re-windowing); None when
    the image is (nearly) constant."""
    x = pixels.astype(np.float32)
    lo, hi = sampled_percentiles(pixels, (0.5, 99.5), samples=1 << 18)
    if hi <= lo:
        return None
    return np.clip((x - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.uint8)


def features(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(keypoints [K, 4] float32 as x, y, size in stored pixels and angle in degrees; descriptors
    [K, 128] uint8, RootSIFT scaled by 255), K <= KEYPOINTS, strongest first."""
    import cv2

    empty = np.zeros((0, 4), np.float32), np.zeros((0, DESC), np.uint8)
    if pixels.ndim != 2 or min(pixels.shape) < 16:
        return empty
    y0, y1, x0, x1 = content_box(pixels)
    x = pixels[y0:y1, x0:x1]
    x = x if x.dtype in (np.uint8, np.uint16, np.float32) else x.astype(np.float32)
    if min(x.shape) < 16:
        return empty
    scale = min(1.0, MAX_SIDE / max(x.shape))
    if scale < 1.0:  # reduce first: a 10,000-pixel side costs no more memory than its reduced version
        x = cv2.resize(x, (max(1, round(x.shape[1] * scale)), max(1, round(x.shape[0] * scale))),
                       interpolation=cv2.INTER_AREA)
        if min(x.shape) < 16:
            return empty
    u8 = to_u8(x)
    if u8 is None:
        return empty
    kps, desc = _sift().detectAndCompute(u8, None)
    if desc is None or not kps:
        return empty
    order = np.argsort([-k.response for k in kps], kind="stable")[:KEYPOINTS]
    kp = np.array([[kps[i].pt[0] / scale + x0, kps[i].pt[1] / scale + y0, kps[i].size / scale, kps[i].angle]
                   for i in order], np.float32)
    d = desc[order].astype(np.float32)
    d = np.sqrt(d / (d.sum(1, keepdims=True) + 1e-7))  # RootSIFT: unit L2 norm
    return kp, np.round(d * 255).astype(np.uint8)


def _unit(desc_u8: np.ndarray) -> np.ndarray:
    d = desc_u8.astype(np.float32)
    return d / np.maximum(np.sqrt(np.einsum("ij,ij->i", d, d)), 1e-6)[:, None]


def votes(desc: np.ndarray, owner: np.ndarray, cfg: CropConfig, block: int = 65536,
          skip: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The plain pass of vote_passes."""
    return next(vote_passes(desc, owner, cfg, block, skip, mirrors=(False,)))


def vote_passes(desc: np.ndarray, owner: np.ndarray, cfg: CropConfig, block: int = 65536,
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
        return faiss.IndexFlatIP(DESC), _unit, _same  # inner products of unit vectors
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


def filled(vote: tuple, desc: np.ndarray, block: int = 65536) -> tuple:
    """A vote index (vote_index) with all of `desc` added, `block` rows at a time."""
    index, project, _ = vote
    for s in range(0, len(desc), block):
        index.add(project(desc[s : s + block]))
    return vote


def _pca_projection(desc: np.ndarray, pca_dim: int, rng: np.random.Generator) -> functools.partial:
    """Descriptors -> unit vectors in the top `pca_dim` principal axes of (up to) 100,000 of them."""
    m = len(desc)
    sample = _unit(desc[np.sort(rng.choice(m, size=min(m, 100_000), replace=False))])
    mean = sample.mean(0)
    cov = (sample.T @ sample) / len(sample) - np.outer(mean, mean)  # 128 x 128: no centred copy, no SVD workspace
    del sample
    basis = np.linalg.eigh(cov.astype(np.float64))[1][:, ::-1][:, :pca_dim].astype(np.float32)
    return functools.partial(pca_projected, mean=mean.astype(np.float32), basis=basis)  # .keywords: saved with the index


def pca_projected(d: np.ndarray, mean: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Descriptors -> unit vectors in `basis` (128 x pca_dim) about `mean`."""
    out = np.empty((len(d), basis.shape[1]), np.float32)
    for s in range(0, len(d), 16384):  # float32 copies of 16,384 descriptors at a time
        z = (_unit(d[s : s + 16384]) - mean) @ basis
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
    sim = np.einsum("ij,ij->i", _unit(asked), _unit(desc[j]))  # exact cosine of each neighbour
    ok = sim >= cfg.descriptor_similarity
    q, j, sim = q[ok], j[ok], sim[ok]
    swap = owner[q] > owner[j]
    q, j = np.where(swap, j, q), np.where(swap, q, j)
    if skip is not None:
        ok = ~skip(owner[q], owner[j])
        q, j, sim = q[ok], j[ok], sim[ok]
    return q.astype(np.int32), j.astype(np.int32), sim.astype(np.float32)


def transform(pa: np.ndarray, pb: np.ndarray, cfg: CropConfig, tol_px: float) -> np.ndarray | None:
    """A 2x3 map of points of A onto B, by RANSAC, when enough matches agree: a similarity, refined
    to the affine map of its inliers where that fits them better (unequal scales: a padded export
    resized back). None when the rotation is over `max_rotation_deg` or the scales too unequal."""
    import cv2

    if len(pa) < max(2, cfg.min_inliers):
        return None
    pa, pb = pa.astype(np.float32), pb.astype(np.float32)
    mat, inliers = cv2.estimateAffinePartial2D(pa, pb, method=cv2.RANSAC, ransacReprojThreshold=tol_px,
                                               maxIters=500, confidence=0.99)
    if mat is None or inliers is None or int(inliers.sum()) < cfg.min_inliers:
        return None
    inl = inliers.ravel().astype(bool)
    if inl.sum() >= 4:
        mat = _refined_affine(pa, pb, mat, tol_px)
    return mat if _plausible(mat, cfg) else None


def _refined_affine(pa: np.ndarray, pb: np.ndarray, similarity: np.ndarray, tol_px: float) -> np.ndarray:
    """The affine map fitted (least squares) to the similarity's inliers, then refitted to its own twice, when it
    explains more matches than the similarity does (or as many, closer); else the similarity."""
    src = np.c_[pa, np.ones(len(pa))].astype(np.float64)
    dst = pb.astype(np.float64)

    def fit(m: np.ndarray) -> tuple[int, float]:
        r = np.sqrt(np.square(src @ m.T - dst).sum(1))
        inl = r <= tol_px
        return int(inl.sum()), float(r[inl].mean()) if inl.any() else np.inf

    best, (count, err) = similarity, fit(similarity.astype(np.float64))
    m = similarity.astype(np.float64)
    for _ in range(3):
        inl = np.sqrt(np.square(src @ m.T - dst).sum(1)) <= tol_px
        if inl.sum() < 4 or np.linalg.matrix_rank(src[inl]) < 3:
            break
        m = np.linalg.lstsq(src[inl], dst[inl], rcond=None)[0].T
    c, e = fit(m)
    return m if c > count or (c == count and e < err) else best


def _plausible(mat: np.ndarray, cfg: CropConfig) -> bool:
    """Rotation within limits, no reflection, scales between 0.1 and 10 and alike within `max_anisotropy`."""
    lin = np.asarray(mat, np.float64)[:, :2]
    if np.linalg.det(lin) <= 0:
        return False
    sv = np.linalg.svd(lin, compute_uv=False)
    angle = float(np.degrees(np.arctan2(lin[1, 0] - lin[0, 1], lin[0, 0] + lin[1, 1])))  # of the nearest rotation
    return 0.1 < sv[1] and sv[0] < 10 and sv[0] / sv[1] <= cfg.max_anisotropy and abs(angle) <= cfg.max_rotation_deg


def mirrored(kp: np.ndarray, width: int) -> np.ndarray:
    """Keypoints [K, 4] (x, y, size, angle) as they would be found in the mirrored image."""
    out = kp.copy()
    out[:, 0] = width - 1 - kp[:, 0]
    out[:, 3] = (180.0 - kp[:, 3]) % 360.0
    return out


def overlap_rect(shape_a: tuple, shape_b: tuple, mat: np.ndarray) -> tuple[float, float, float, float, float] | None:
    """The part of B's frame that A covers once mapped (x0, y0, x1, y1 in B pixels) and its share of
    the smaller image's mapped area."""
    ha, wa = shape_a
    hb, wb = shape_b
    corners = np.array([[0, 0, 1], [wa, 0, 1], [0, ha, 1], [wa, ha, 1]], np.float64) @ mat.T
    x0, y0 = max(0.0, corners[:, 0].min()), max(0.0, corners[:, 1].min())
    x1, y1 = min(float(wb), corners[:, 0].max()), min(float(hb), corners[:, 1].max())
    if x1 - x0 < 16 or y1 - y0 < 16:
        return None
    smaller = min(wb * hb, wa * ha * abs(float(np.linalg.det(np.asarray(mat, np.float64)[:, :2]))))
    return x0, y0, x1, y1, (x1 - x0) * (y1 - y0) / smaller


def aligned_similarity(a: np.ndarray, b: np.ndarray, mat: np.ndarray, rect: tuple) -> float:
    """The texture score of the overlap, resampled from A (through `mat`) and from B onto one SIZE x
    SIZE grid: the cosine of the whitened grids (_texture_cosine)."""
    import cv2

    x0, y0, x1, y1 = rect[:4]
    gb = np.asarray(Image.fromarray(b.astype(np.float32), mode="F").resize((SIZE, SIZE), Image.BOX,
                                                                              box=(x0, y0, x1, y1)), np.float32)
    # grid (u, v) -> B pixel -> A pixel, with A first reduced so that one grid cell is about one A pixel
    sx, sy = (x1 - x0) / SIZE, (y1 - y0) / SIZE
    grid_to_b = np.array([[sx, 0, x0 + 0.5 * sx - 0.5], [0, sy, y0 + 0.5 * sy - 0.5], [0, 0, 1]])
    b_to_a = np.linalg.inv(np.vstack([mat, [0, 0, 1]]))
    grid_to_a = b_to_a @ grid_to_b
    cell = float(np.sqrt(abs(np.linalg.det(grid_to_a[:2, :2]))))  # A pixels per grid cell
    af = a.astype(np.float32)
    if cell > 1.5:
        r = 1.0 / cell
        af = cv2.resize(af, (max(1, round(af.shape[1] * r)), max(1, round(af.shape[0] * r))), interpolation=cv2.INTER_AREA)
        ry, rx = af.shape[0] / a.shape[0], af.shape[1] / a.shape[1]
        grid_to_a = np.diag([rx, ry, 1.0]) @ np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]]) @ grid_to_a
        grid_to_a = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1]]) @ grid_to_a
    ga = cv2.warpAffine(af, grid_to_a[:2], (SIZE, SIZE), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                        borderMode=cv2.BORDER_REFLECT)
    return _texture_cosine(whiten(ga, GRID_SIGMA), whiten(gb, GRID_SIGMA))


def _texture_cosine(za: np.ndarray, zb: np.ndarray, blocks: int = 4) -> float:
    """The cosine of two whitened grids, or the median of their 4 x 4 blocks' cosines if lower: a pair aligned on
    a few strong edges (two different knees drawn alike, rotated into line) correlates in those blocks only, a
    copy everywhere (measured: such a phantom pair 0.30 whole, 0.19 median, three blocks at 0.6-0.7)."""
    n = za.shape[0] // blocks
    per_block = [_cosine(za[i : i + n, j : j + n], zb[i : i + n, j : j + n])
                 for i in range(0, n * blocks, n) for j in range(0, n * blocks, n)]
    return min(_cosine(za, zb), float(np.median(per_block)))


def _cosine(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x.ravel() - x.mean(), y.ravel() - y.mean()
    den = float(np.linalg.norm(x) * np.linalg.norm(y))
    return float(x @ y / den) if den > 0 else 0.0


@dataclass(frozen=True)
class CropEdge:
    a: int
    b: int
    similarity: float
    votes: int
    mirrored: bool = False  # a's mirror image matches b


def crop_edges(kp: np.ndarray, desc: np.ndarray, sizes: np.ndarray,
               skip: Callable[[np.ndarray, np.ndarray], np.ndarray], load: Callable[[int], np.ndarray],
               cfg: CropConfig, shapes: np.ndarray | None = None, *, rank: np.ndarray | None = None,
               asking: np.ndarray | None = None, index: tuple | None = None) -> tuple[list[CropEdge], dict]:
    """Verified crop pairs among images 0..n-1, given every image's keypoints and descriptors one
    after another (`sizes[i]` rows for image i). `skip(a, b)` marks candidate pairs (arrays) not to
    check; `load(i)` reads image i's pixels (called from several threads); `shapes` [n, 2] (rows,
    cols), when known, spares reading images whose candidate pairs fail RANSAC. Returns the edges
    (plain pairs in pair order, then mirrored ones; a pair found both ways keeps its plain edge) and
    the count and time of each stage.

    For an incremental curation (curation/dedup/incremental.py): `rank` [n] is the number image i (the
    i-th block of rows) goes by in pairs, `skip`, `load`, `shapes` and the edges (default i), so
    that a pair is oriented as a full run over images in id order orients it; `asking` [n] bool:
    only these images' descriptors ask (the others are found); `index`: a vote index already
    holding all of `desc` (default: built here). `kp` and `desc` may be memory maps."""
    n = len(sizes)
    counts = {"descriptors": int(len(desc)), "votes": 0, "candidates": 0, "transforms": 0, "verified": 0,
              "mirrored": 0, "search_s": 0.0, "check_s": 0.0}
    if n < 2 or len(desc) == 0:
        return [], counts
    t0 = time.perf_counter()
    passes = _candidate_pairs(desc, sizes, skip, cfg, rank, asking, index)
    counts["votes"] = sum(v for _, _, v in passes)
    counts["candidates"] = sum(len(c.keys) for _, c, _ in passes)
    t1 = time.perf_counter()
    counts["search_s"] = round(t1 - t0, 3)
    edges: dict[tuple[int, int], CropEdge] = {}
    for mirror, cand, _ in passes:
        found, checked = _verified_candidates(kp, cand, n, load, cfg, shapes, mirror)
        counts["transforms"] += checked
        for e in found:
            edges.setdefault((e.a, e.b), e)
    counts["verified"] = len(edges)
    counts["mirrored"] = sum(e.mirrored for e in edges.values())
    counts["check_s"] = round(time.perf_counter() - t1, 3)
    return list(edges.values()), counts


class _Candidates(NamedTuple):
    """Image pairs with `min_votes` votes, in key order (a * n + b); pair x's votes are the
    descriptor matches q[first[x] : first[x] + n_votes[x]] -> j[...]."""
    q: np.ndarray
    j: np.ndarray
    keys: np.ndarray
    first: np.ndarray
    n_votes: np.ndarray


def _candidate_pairs(desc: np.ndarray, sizes: np.ndarray, skip: Callable[[np.ndarray, np.ndarray], np.ndarray],
                     cfg: CropConfig, rank: np.ndarray | None = None, asking: np.ndarray | None = None,
                     index: tuple | None = None) -> list[tuple[bool, _Candidates, int]]:
    """Pass 1: the descriptor votes grouped by image pair, per vote pass: (mirrored, the candidate
    pairs, the number of votes)."""
    n = len(sizes)
    owner = np.repeat(np.arange(n, dtype=np.int64) if rank is None else np.asarray(rank, np.int64), sizes)
    queries = None
    if asking is not None:  # the first query_keypoints rows of each asking image
        starts = np.r_[0, np.cumsum(sizes)][:-1][asking]
        per = np.minimum(np.asarray(sizes)[asking], cfg.query_keypoints).astype(np.int64)
        queries = np.repeat(starts, per) + np.arange(int(per.sum())) - np.repeat(np.cumsum(per) - per, per)
    mirrors = (False, True) if cfg.mirror else (False,)
    out = []
    for mirror, (q, j, _) in zip(mirrors, vote_passes(desc, owner, cfg, skip=skip, mirrors=mirrors, index=index,
                                                      queries=queries)):
        pair = owner[q] * n + owner[j]
        order = np.argsort(pair, kind="stable")
        q, j, pair = q[order], j[order], pair[order]
        del order
        keys, first, per_pair = np.unique(pair, return_index=True, return_counts=True)
        del pair
        keep = per_pair >= cfg.min_votes
        out.append((mirror, _Candidates(q, j, keys[keep], first[keep], per_pair[keep]), len(q)))
    return out


def _verified_candidates(kp: np.ndarray, cand: _Candidates, n: int, load: Callable[[int], np.ndarray],
                         cfg: CropConfig, shapes: np.ndarray | None, mirror: bool) -> tuple[list[CropEdge], int]:
    """Passes 2 and 3 over chunks of 256 candidates on threads: (the verified edges in pair order,
    the number of plausible transforms checked on the pixels)."""
    chunks = [range(s, min(s + 256, len(cand.keys))) for s in range(0, len(cand.keys), 256)]
    workers = max(1, min(cfg.workers or os.cpu_count() or 1, len(chunks)))
    edges, transforms = [], 0
    # OpenCV, PIL and numpy release the GIL in the heavy steps: threads share the candidate arrays
    with ThreadPoolExecutor(workers) as pool:
        for found, checked in pool.map(lambda chunk: _checked_chunk(chunk, kp, cand, n, load, cfg, shapes, mirror),
                                       chunks):
            edges += found
            transforms += checked
    return edges, transforms


def _checked_chunk(chunk: range, kp: np.ndarray, cand: _Candidates, n: int, load: Callable[[int], np.ndarray],
                   cfg: CropConfig, shapes: np.ndarray | None, mirror: bool) -> tuple[list[CropEdge], int]:
    """Checks candidates in key order (grouped by their first image): pixels cached per chunk. In a
    mirrored pass the first image is mirrored, keypoints and pixels."""
    found, transforms = [], 0
    pixels = _pixel_cache(load)
    for x in chunk:
        key, f, c = int(cand.keys[x]), int(cand.first[x]), int(cand.n_votes[x])
        a, b = divmod(key, n)
        shape_b = tuple(shapes[b]) if shapes is not None else pixels(b).shape
        pts_a = kp[cand.q[f : f + c]]
        if mirror:
            pts_a = mirrored(pts_a, int(shapes[a][1]) if shapes is not None else pixels(a).shape[1])
        mat = transform(pts_a[:, :2], kp[cand.j[f : f + c], :2], cfg, tol_px=0.012 * max(shape_b))
        if mat is None:
            continue
        try:
            pix_a, pix_b = pixels(a), pixels(b)
        except PixelsRefused:  # an object that went bad since its keypoints were taken: no edge, the search goes on
            continue
        if mirror:
            pix_a = pix_a[:, ::-1]
        rect = overlap_rect(pix_a.shape, pix_b.shape, mat)
        if rect is None or rect[4] < cfg.min_overlap:
            continue
        transforms += 1
        sim = aligned_similarity(pix_a, pix_b, mat, rect)
        if sim >= cfg.threshold:
            found.append(CropEdge(a, b, sim, c, mirror))
    return found, transforms


def _pixel_cache(load: Callable[[int], np.ndarray]) -> Callable[[int], np.ndarray]:
    """`load` behind a cache of the 64 images read last (the first read is dropped first)."""
    cache: dict[int, np.ndarray] = {}

    def pixels(i: int) -> np.ndarray:
        if i not in cache:
            if len(cache) >= 64:
                cache.pop(next(iter(cache)))
            cache[i] = load(i)
        return cache[i]

    return pixels
