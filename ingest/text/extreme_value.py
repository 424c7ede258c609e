"""A third rendering: overlay text drawn at the image's extreme value, over anatomy almost as bright (or dark).

Consoles draw a label at the top of the value range (light) or the bottom (dark). Where it crosses bright bone (or
dark soft tissue) the whole-range window shows it a few grey levels off its surround (light text at the maximum on
bone at 241 of 255), under the detector's stroke contrast; a window over the last few levels below the maximum shows
it plainly. It is looked at only where the pixels at an extreme value look like a label: a few hundred of them in
thin strokes (not a saturated patch), within a small box (not trabeculae saturated all over a phantom). The extreme
may be the whole-range window's own edge: where bone is clipped at the same maximum as the label, the two hold more
than the half percent of pixels the window leaves out (seed 2 u0021, seed 3 t0029, 8-bit 3000 px). Strokes beside a
saturated patch (background clipped at the minimum, next to a dark label) are judged apart from it, and where a
speck of bone at the same value widens the box, the cluster holding nearly all the pixels is the label. The label's
lines, a few pixels apart, join into one candidate row; it is split into the lines its own pixels form, as OCR
scales a crop to its candidates' height. Most images stop at a min/max and two counts.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from ingest.text.candidates import Box, Rendering, windowed

MIN_LABEL_PIXELS = 200  # a line or two of characters; a handful of saturated pixels is noise or a screw's tip
MAX_THICK_SHARE = 0.1  # strokes: few of their pixels survive a 3x3 erosion (a saturated patch's most do)
# a label beside a saturated patch is looked for apart from it only where the patch is not nearly all of the extreme
# pixels: a cost gate. Bone clipped at the label's own value made 81-87% of them (u0021, t0029); at 0.9 the 60
# clinical-size images cost the same, and 1 of 48 others gets 3 more candidates for OCR
MAX_PATCH_SHARE = 0.9
MAX_BOX_SHARE = 0.05  # the extreme pixels' box, as a share of the image: a label, not texture all over
MAX_STRAY_SHARE = 0.05  # ... of which a few may lie apart from the label (a bright speck of bone at the maximum too)
WINDOW_LEVELS = 8  # the window below (above) the extreme, in whole-range grey levels, at least


@dataclass(frozen=True)
class ExtremeLabel:
    rendering: Rendering
    near: np.ndarray  # 0/255: the working copy's pixels at the extreme (the label's own pixels, and specks)

    def lines(self, boxes: list[Box]) -> list[Box]:
        """Each candidate (stored coordinates) split into the lines of the label's own pixels, none of them sure
        (masked only where OCR reads it). The line detector joins a label's lines a few pixels apart into one row,
        and OCR, which scales a crop to its candidates' height, reads nothing at twice a line's."""
        return [replace(line, sure=False) for b in boxes for line in _split(b, self.near, self.rendering.factor)]


def extreme_value_renderings(small: np.ndarray, lo: int, hi: int, factor: float) -> list[ExtremeLabel]:
    """Renderings (at most two: the top and the bottom of the range) of `small` where its extreme values look like
    a label, windowed over the last levels before that extreme; strokes count only in the label's box."""
    bottom, top = (int(v) for v in cv2.minMaxLoc(small)[:2])
    if top == bottom:  # one value: nothing drawn on anything
        return []
    level = max((hi - lo) / 255, 1.0)
    out = []
    for extreme in (top, bottom):
        light = extreme == top
        near = cv2.compare(small, extreme - level if light else extreme + level, cv2.CMP_GE if light else cv2.CMP_LE)
        near = _label_pixels(near)
        box = None if near is None else _label_box(near)
        if box is None:
            continue
        gray = windowed(small, min(hi, int(top - WINDOW_LEVELS * level)), top) if light else \
            windowed(small, bottom, max(lo, int(bottom + WINDOW_LEVELS * level)))
        within = np.zeros(small.shape, np.uint8)
        within[box] = 1
        out.append(ExtremeLabel(Rendering.of(gray, factor, relative=True, within=within), near))
    return out


def _label_pixels(near: np.ndarray) -> np.ndarray | None:
    """The extreme pixels `near` (0/255) if they are thin strokes, a few hundred or more; else None. Where a
    saturated patch holds some of them (the background clipped at the image's edge, beside a dark label), the
    strokes apart from it are judged alone."""
    n = cv2.countNonZero(near)
    if n < MIN_LABEL_PIXELS:
        return None
    thick = cv2.erode(near, np.ones((3, 3), np.uint8))
    thick_pixels = cv2.countNonZero(thick)
    if thick_pixels <= MAX_THICK_SHARE * n:
        return near
    if thick_pixels > MAX_PATCH_SHARE * n:
        return None
    apart = cv2.subtract(near, cv2.dilate(thick, np.ones((5, 5), np.uint8)))
    n = cv2.countNonZero(apart)
    if n < MIN_LABEL_PIXELS or cv2.countNonZero(cv2.erode(apart, np.ones((3, 3), np.uint8))) > MAX_THICK_SHARE * n:
        return None
    return apart


def _label_box(near: np.ndarray):
    """The slice of the box around the label's pixels `near` (0/255), padded, if they lie in a small box; else
    None."""
    x, y, w, h = cv2.boundingRect(near)
    pad = max(4, min(w, h) // 2)
    if w * h > MAX_BOX_SHARE * near.size:
        # a few bright specks of anatomy apart from the label: the label's own cluster, with the margin of the gap
        # that joined it (half the box's side reaches past the label into the anatomy at the same extreme)
        pad = max(3, round(0.012 * near.shape[0]))
        cluster = _main_cluster(near[y:y + h, x:x + w], near.size, pad)
        if cluster is None:
            return None
        x, y, w, h = x + cluster[0], y + cluster[1], cluster[2], cluster[3]
    return np.s_[max(y - pad, 0):y + h + pad, max(x - pad, 0):x + w + pad]


def _main_cluster(near: np.ndarray, image_size: int, gap: int):
    """(x, y, w, h) within `near` of the cluster of extreme pixels (characters and lines `gap` apart joined) that
    holds all but MAX_STRAY_SHARE of them, if there is one and its box is small; else None. Reached only where the
    pixels' whole box is too large: texture saturated all over has no such cluster."""
    joined = cv2.dilate(near, cv2.getStructuringElement(cv2.MORPH_RECT, (2 * gap + 1,) * 2))
    count, labels = cv2.connectedComponents(joined, connectivity=8)
    held = np.bincount(labels[near > 0], minlength=count)
    main = int(np.argmax(held))
    if held[main] < (1 - MAX_STRAY_SHARE) * held.sum():
        return None
    x, y, w, h = cv2.boundingRect(cv2.bitwise_and(near, near, mask=(labels == main).astype(np.uint8)))
    return (x, y, w, h) if w * h <= MAX_BOX_SHARE * image_size else None


def _split(box: Box, near: np.ndarray, factor: float) -> list[Box]:
    """`box` as the lines its extreme pixels form across it (runs of rows, or of columns for a turned line, that
    hold some; a gap of one row is no gap), or `box` itself where they form one line (or none)."""
    work = box.scaled(1 / factor)
    along_rows = box.width >= box.height
    cut = near[work.y0:work.y1, work.x0:work.x1]
    held = np.count_nonzero(cut, axis=1 if along_rows else 0) > 0
    held[1:-1] |= held[:-2] & held[2:]
    edges = np.flatnonzero(np.diff(np.concatenate([[0], held.astype(np.int8), [0]])))
    runs = [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2]) if b - a >= 3]
    if len(runs) < 2:
        return [box]
    start = work.y0 if along_rows else work.x0
    out = []
    for a, b in runs:
        margin = max(1, (b - a) // 4)
        a, b = max(start + a - margin, 0), start + b + margin
        line = Box(a, work.x0, b, work.x1) if along_rows else Box(work.y0, a, work.y1, b)
        out.append(_clipped(line.scaled(factor), box))
    return out


def _clipped(line: Box, box: Box) -> Box:
    return Box(max(line.y0, box.y0), max(line.x0, box.x0), min(line.y1, box.y1), min(line.x1, box.x1))
