"""A third rendering: overlay text drawn at the image's extreme value, over anatomy almost as bright (or dark).

Consoles draw a label at the top of the value range (light) or the bottom (dark). Where it crosses bright bone (or
dark soft tissue) the whole-range window shows it a few grey levels off its surround (light text at the maximum on
bone at 241 of 255), under the detector's stroke contrast; a window over the last few levels below the maximum shows
it plainly. It is looked at only where the pixels at an extreme value look like a label: a few hundred of them
beyond the whole-range window, in thin strokes (not a saturated patch), within a small box (not trabeculae saturated
all over a phantom). Most images stop at a min/max and two counts.
"""

from __future__ import annotations

import cv2
import numpy as np

from ingest.text.candidates import Rendering, windowed

MIN_LABEL_PIXELS = 200  # a line or two of characters; a handful of saturated pixels is noise or a screw's tip
MAX_THICK_SHARE = 0.1  # strokes: few of their pixels survive a 3x3 erosion (a saturated patch's most do)
MAX_BOX_SHARE = 0.05  # the extreme pixels' box, as a share of the image: a label, not texture all over
WINDOW_LEVELS = 8  # the window below (above) the extreme, in whole-range grey levels, at least


def extreme_value_renderings(small: np.ndarray, lo: int, hi: int, factor: float) -> list[Rendering]:
    """Renderings (at most two: the top and the bottom of the range) of `small` where its extreme values look like
    a label, windowed over the last levels before that extreme; strokes count only in the label's box."""
    bottom, top = (int(v) for v in cv2.minMaxLoc(small)[:2])
    level = max((hi - lo) / 255, 1.0)
    out = []
    for extreme, beyond in ((top, top - hi), (bottom, lo - bottom)):
        if beyond < 2 * level:
            continue
        light = extreme == top
        near = cv2.compare(small, extreme - level if light else extreme + level, cv2.CMP_GE if light else cv2.CMP_LE)
        box = _label_box(near)
        if box is None:
            continue
        gray = windowed(small, min(hi, int(top - WINDOW_LEVELS * level)), top) if light else \
            windowed(small, bottom, max(lo, int(bottom + WINDOW_LEVELS * level)))
        within = np.zeros(small.shape, np.uint8)
        within[box] = 1
        out.append(Rendering.of(gray, factor, relative=True, within=within))
    return out


def _label_box(near: np.ndarray):
    """The slice of the box around the extreme pixels `near` (0/255), padded, if they look like a label; else None."""
    n = cv2.countNonZero(near)
    if n < MIN_LABEL_PIXELS:
        return None
    if cv2.countNonZero(cv2.erode(near, np.ones((3, 3), np.uint8))) > MAX_THICK_SHARE * n:
        return None
    x, y, w, h = cv2.boundingRect(near)
    if w * h > MAX_BOX_SHARE * near.size:
        return None
    pad = max(4, min(w, h) // 2)
    return np.s_[max(y - pad, 0):y + h + pad, max(x - pad, 0):x + w + pad]
