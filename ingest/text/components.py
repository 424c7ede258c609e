"""Connected components of a 0/1 mask, labelled for the text detector's many small masks.

The detector labels several masks an image (rows of strokes, stroke blobs, glyphs), most of them a few strokes spread
over half the image. OpenCV's component statistics visit every pixel it labels, background too: labelling only the
bounding box of the set pixels, and taking a sparse mask's statistics from its set pixels alone, gives the same
labels and statistics at a fraction of the cost (0.8 against 4.3 ms on a 1024 px mask).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

SPARSE = 20  # a mask with under 1 in SPARSE of its box's pixels set gets its component statistics from them


@dataclass(frozen=True)
class Components:
    """The 8-connected components of a 0/1 mask, labelled within the bounding box of its set pixels. Labels are
    numbered as for the whole mask (in raster order of their first pixel)."""

    count: int
    stats: np.ndarray  # per label: x, y, width, height, area in the mask's coordinates (label 0: the labelled box's)
    box_labels: np.ndarray  # the labels within `box`
    box: tuple[int, int, int, int]  # x, y, width, height of the labelled part
    shape: tuple[int, int]

    def at(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """The labels at points (ys, xs) of the mask (0 outside the labelled part)."""
        x, y, w, h = self.box
        inside = (ys >= y) & (ys < y + h) & (xs >= x) & (xs < x + w)
        out = np.zeros(len(ys), np.int32)
        out[inside] = self.box_labels[ys[inside] - y, xs[inside] - x]
        return out

    def of(self, i: int) -> np.ndarray:
        """0/1 within label `i`'s bounding box: its pixels."""
        x, y, w, h = self.stats[i, :4].tolist()
        bx, by = self.box[:2]
        return (self.box_labels[y - by:y - by + h, x - bx:x - bx + w] == i).astype(np.uint8)

    def kept(self, keep: np.ndarray) -> np.ndarray:
        """0/1: the pixels of the components `keep` (a bool per label) marks."""
        x, y, w, h = self.box
        out = np.zeros(self.shape, np.uint8)
        out[y:y + h, x:x + w] = keep.astype(np.uint8)[self.box_labels]
        return out


def label_components(mask: np.ndarray) -> Components:
    x, y, w, h = _set_box(mask)
    box = np.ascontiguousarray(mask[y:y + h, x:x + w])
    pixels = cv2.countNonZero(box)
    # Grana's block-based labelling: 3x faster than OpenCV's default on images this small
    if pixels * SPARSE > w * h:
        n, labels, stats, _ = cv2.connectedComponentsWithStatsWithAlgorithm(box, 8, cv2.CV_32S, cv2.CCL_GRANA)
    else:
        n, labels = cv2.connectedComponentsWithAlgorithm(box, 8, cv2.CV_32S, cv2.CCL_GRANA)
        stats = _sparse_stats(box, labels, n, pixels)
    stats[:, cv2.CC_STAT_LEFT] += x
    stats[:, cv2.CC_STAT_TOP] += y
    return Components(n, stats, labels, (x, y, w, h), mask.shape)


def _set_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """The bounding box (x, y, width, height) of the mask's set pixels, from even coordinates: Grana's labelling
    scans 2 x 2 blocks, and its labels come out numbered as for the whole mask only where the blocks line up. At
    least one pixel."""
    x, y, w, h = cv2.boundingRect(mask)
    if w == 0:
        return 0, 0, 1, 1
    return x - x % 2, y - y % 2, w + x % 2, h + y % 2


def _sparse_stats(box: np.ndarray, labels: np.ndarray, n: int, pixels: int) -> np.ndarray:
    """OpenCV's component statistics from the set pixels alone: OpenCV's own visit every pixel of the box, which
    costs 5 times more where a few strokes of noise spread over a whole image."""
    stats = np.zeros((n, 5), np.int32)
    stats[0] = (0, 0, box.shape[1], box.shape[0], box.size - pixels)
    if pixels == 0:
        return stats
    points = cv2.findNonZero(box).reshape(-1, 2)
    of = labels[points[:, 1], points[:, 0]]
    order = np.argsort(of, kind="stable")
    of, xs, ys = of[order], points[order, 0], points[order, 1]
    starts = np.flatnonzero(np.r_[True, of[1:] != of[:-1]])
    x0, y0 = np.minimum.reduceat(xs, starts), np.minimum.reduceat(ys, starts)
    stats[1:, cv2.CC_STAT_LEFT], stats[1:, cv2.CC_STAT_TOP] = x0, y0
    stats[1:, cv2.CC_STAT_WIDTH] = np.maximum.reduceat(xs, starts) - x0 + 1
    stats[1:, cv2.CC_STAT_HEIGHT] = np.maximum.reduceat(ys, starts) - y0 + 1
    stats[1:, cv2.CC_STAT_AREA] = np.diff(np.r_[starts, len(of)])
    return stats


def row_boxes(strokes: np.ndarray, gap: int) -> np.ndarray:
    """The bounding boxes (x, y, width, height: OpenCV's first four statistics, label 0 the background) of the
    8-connected components of `strokes` dilated by `gap` pixels along the rows. The dilated mask is dense where the
    strokes are sparse, and OpenCV's statistics visit all of it; but each row's box is its strokes' box widened by
    `gap` on each side (a stroke pixel grows into a run, clipped at the image's edge), so sparse strokes are measured
    on their own pixels and only labelled on the dilated mask."""
    rows = cv2.dilate(strokes, cv2.getStructuringElement(cv2.MORPH_RECT, (2 * gap + 1, 1)))
    x, y, w, h = _set_box(rows)
    seeds = np.ascontiguousarray(strokes[y:y + h, x:x + w])
    pixels = cv2.countNonZero(seeds)
    if pixels * SPARSE > w * h:
        return label_components(rows).stats[:, :4]
    n, labels = cv2.connectedComponentsWithAlgorithm(np.ascontiguousarray(rows[y:y + h, x:x + w]), 8, cv2.CV_32S,
                                                     cv2.CCL_GRANA)
    stats = _sparse_stats(seeds, labels, n, pixels)[:, :4]  # the strokes' own boxes, per row
    left = np.maximum(stats[1:, cv2.CC_STAT_LEFT] + x - gap, 0)
    right = np.minimum(stats[1:, cv2.CC_STAT_LEFT] + stats[1:, cv2.CC_STAT_WIDTH] - 1 + x + gap, strokes.shape[1] - 1)
    stats[1:, cv2.CC_STAT_LEFT], stats[1:, cv2.CC_STAT_WIDTH] = left, right - left + 1
    stats[1:, cv2.CC_STAT_TOP] += y
    stats[0] = (x, y, w, h)
    return stats
