"""A second rendering for images deeper than 8 bits: flat regions seen through a narrow window.

In a 12-16-bit image, text a few tens of levels above a dark border (or below a bright one) is a fraction of one
grey level at the whole-range window, and at the declared window too; a narrow window over the border shows it
plainly. "Nothing readable at any window" needs the screen to look there as well. This rendering does, on the
detector's reduced copy: where the image is flat (its local spread under a few grey levels of the whole-range
window, and reaching the image's edge: borders, collimation, the background outside the body), each pixel's offset from its neighbourhood's mean
is shown at a window of FLAT_NOISE_WINDOWS times the local noise; everywhere else it is mid-grey. Text there has
full contrast, noise a quarter of it, and the detector's own tests (two clean classes crossed like characters)
tell them apart. Costs two box filters on the reduced copy; 8-bit images skip it.
"""

from __future__ import annotations

import cv2
import numpy as np

FLAT_LEVELS = 4.0  # a region whose local spread is under this many grey levels of the whole-range window is flat
NOISE_LEVELS = 1.0  # ... and whose noise is under this many
FLAT_NOISE_WINDOWS = 12.0  # the narrow window's width, in the local noise: noise spans +-21 grey levels, text 4x
# the noise above is its own least local spread; text at 4 noise widths or more stands at 85+ grey levels
MIN_CONTRAST = 80
MIN_FLAT_SHARE = 0.01
QUARTER = 4


def narrow_window_rendering(small: np.ndarray, lo: float, hi: float) -> np.ndarray | None:
    """The 8-bit rendering of the flat regions of the detector's reduced copy `small`, or None where there is
    nothing to show: an 8-bit image, or no flat region. `lo`..`hi`: the whole-range window (stored values)."""
    if small.dtype.itemsize < 2 or hi - lo <= 255:
        return None  # at most 256 levels in the window: the whole-range rendering already shows every step
    raw = small.astype(np.float32)
    h, w = raw.shape
    k = max(15, int(round(max(h, w) * 0.05)) | 1)  # text a small share of each window: a faint halo
    mean = cv2.blur(raw, (k, k))
    spread = np.sqrt(np.maximum(cv2.blur(raw * raw, (k, k)) - mean * mean, 0))
    # which regions are flat is decided on a copy a quarter the size (the decision is coarse; this is the cheap
    # exit for most images): flat means the window itself spans under FLAT_LEVELS grey levels at the whole-range
    # window (text too faint to see there included; a bone edge is not), and its noise (its quietest neighbour, a
    # line of text being short across) is under NOISE_LEVELS: text faint enough to vanish at the whole range yet
    # readable in a narrow window is several noise widths high; noisier regions could hide no such text
    coarse = (max(w // QUARTER, 1), max(h // QUARTER, 1))
    spread_q = cv2.resize(spread, coarse, interpolation=cv2.INTER_AREA)
    noise_q = cv2.erode(spread_q, cv2.getStructuringElement(cv2.MORPH_RECT, (2 * k // QUARTER + 1,) * 2))
    level = (hi - lo) / 255
    flat_q = _touching_the_edge((spread_q < FLAT_LEVELS * level) & (noise_q < NOISE_LEVELS * level))
    if flat_q.mean() < MIN_FLAT_SHARE:
        return None
    noise = cv2.resize(noise_q, (w, h), interpolation=cv2.INTER_LINEAR)
    # the non-flat surround fades to mid-grey over a few pixels: a hard mask edge would be a stroke of its own
    weight = cv2.resize(flat_q.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    # shown after a 3x3 blur: a stroke of text keeps most of its contrast, pixel noise falls to about half, so the
    # noise's own peaks stay under the detector's stroke contrast
    f = cv2.GaussianBlur(raw, (3, 3), 0)
    local = np.clip((f - mean) * (255.0 / FLAT_NOISE_WINDOWS) / np.maximum(noise, 1.0), -128, 127)
    return (128 + local * weight).astype(np.uint8)


def _touching_the_edge(flat: np.ndarray) -> np.ndarray:
    """The flat regions that reach the image's edge: collimation, shutters, the background around the body. Smooth
    patches inside anatomy are left out (their texture, shown at a narrow window, is all strokes and no text)."""
    n, labels = cv2.connectedComponents(flat.astype(np.uint8), connectivity=4)
    keep = np.zeros(n, bool)
    keep[np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])] = True
    keep[0] = False
    return keep[labels]
