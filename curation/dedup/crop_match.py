"""Cropped re-exports: local features, candidate pairs by descriptor votes, a similarity transform
by RANSAC, and a pixel check of the aligned overlap.

Why a second method next to the global signature (curation/dedup/signatures.py): a knee's identity is in
its fine texture, and a whole-image texture correlation falls from 1.0 to 0.28 at 1% misalignment
and to 0.06 at 3% (measured on knee-xray-kl), so no single global vector survives a crop of a few
percent followed by a resize. Local features do: SIFT keypoints are found again wherever the crop
kept the content, at a scale that follows any resize, and their descriptors are normalised for
contrast (keypoints.py).

Search over the catalog, in pass order:
  1. descriptor votes (descriptor_votes.py): a descriptor's near neighbour in another image is a vote for that
     image pair; each image also asks with its descriptors as they would be in its mirror image;
  2. pairs with `min_votes` votes, not already in one near-duplicate group, not in one MRI series
     (neighbouring slices) and not of opposite laterality, get a similarity transform (scale,
     rotation, shift) by RANSAC over their matched keypoints (the first image's mirrored for a
     mirrored pair), refined to an affine map when its inliers show unequal scales (an export padded
     on one side, then resized back to its old size);
  3. a plausible transform (rotation within `max_rotation_deg`, scales alike, the smaller image
     mostly inside the larger one) is checked on the pixels: the overlap is resampled from both images onto one 128 x 128 grid,
     whitened (finer than the signature: a 2-pixel high-pass), and compared by cosine. Keypoints on
     the same anatomy agree geometrically between two different knees too; their texture does not.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np
from PIL import Image

from catalog.pixel_budget import PixelsRefused
from curation.dedup.config import CropConfig
from curation.dedup.descriptor_votes import vote_passes
from curation.dedup.keypoints import mirrored
from curation.dedup.signatures import whiten

SIZE = 128  # the pixel check's grid
GRID_SIGMA = 2.0  # its high-pass, finer than the signature's 4: anatomy aligned by RANSAC correlates at coarse scales


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
