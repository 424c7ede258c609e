"""Local features for the crop search (crop_match.py): per image the strongest `KEYPOINTS` SIFT keypoints
(positions in stored pixels) with RootSIFT descriptors as uint8, computed once with the signature, and what
they are in the mirrored image.

Keypoints are found inside the image's content box (borders.py): the corners of a black pad or letterbox are the
strongest keypoints of a padded export and would crowd out the anatomy's.
"""

from __future__ import annotations

import threading

import numpy as np

from catalog.pixels import sampled_percentiles
from curation.dedup.borders import content_box

KEYPOINTS = 24
MAX_SIDE = 256  # keypoints are found on the image reduced to this longer side (never enlarged): SIFT
# doubles its input first, so a 512-pixel side costs ~7x a 256-pixel one (measured ~100 vs ~14 ms)
DESC = 128
FEATURES_VERSION = 2  # 2: found inside the content box. Stored keypoints of another version are recomputed


def _mirror_permutation() -> np.ndarray:
    """SIFT of the mirrored image (x -> width - 1 - x) at a keypoint is the original's descriptor permuted by this.
    OpenCV lays a descriptor out as 4 x 4 spatial bins x 8 orientation bins in the keypoint's own frame, whose
    axis (the dominant gradient) the mirror keeps: the rows across that axis reverse and the orientations negate.
    Checked against SIFT on mirrored real knees (tests/curation/test_crop_match.py)."""
    r, c, o = np.meshgrid(np.arange(4), np.arange(4), np.arange(8), indexing="ij")
    return (((3 - r) * 4 + c) * 8 + (8 - o) % 8).reshape(-1)


MIRROR = _mirror_permutation()


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


def unit(desc_u8: np.ndarray) -> np.ndarray:
    d = desc_u8.astype(np.float32)
    return d / np.maximum(np.sqrt(np.einsum("ij,ij->i", d, d)), 1e-6)[:, None]


def mirrored(kp: np.ndarray, width: int) -> np.ndarray:
    """Keypoints [K, 4] (x, y, size, angle) as they would be found in the mirrored image."""
    out = kp.copy()
    out[:, 0] = width - 1 - kp[:, 0]
    out[:, 3] = (180.0 - kp[:, 3]) % 360.0
    return out
