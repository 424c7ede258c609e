"""A second rendering for images deeper than 8 bits: flat regions seen through a narrow window.

In a 12-16-bit image, text a few tens of levels above a dark border (or below a bright one) is a fraction of one
grey level at the whole-range window, and at the declared window too; a narrow window over the border shows it
plainly. "Nothing readable at any window" needs the screen to look there as well. This rendering does, on the
detector's reduced copy: where the image is flat (its local spread under a few grey levels of the whole-range
window: borders, collimation, the background outside the body), each pixel's offset from its neighbourhood's mean
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


def narrow_window_rendering(small: np.ndarray, lo: float, hi: float) -> np.ndarray | None:
    """The 8-bit rendering of the flat regions of the detector's reduced copy `small`, or None where there is
    nothing to show: an 8-bit image, or no flat region. `lo`..`hi`: the whole-range window (stored values)."""
    if small.dtype.itemsize < 2 or hi - lo <= 255:
        return None  # at most 256 levels in the window: the whole-range rendering already shows every step
    raw = small.astype(np.float32)
    k = max(9, int(round(max(raw.shape) * 0.02)) | 1)
    mean = cv2.blur(raw, (k, k))
    spread = np.sqrt(np.maximum(cv2.blur(raw * raw, (k, k)) - mean * mean, 0))
    # the noise where a window holds text too: the least spread nearby (a line of text is short across; there are
    # text-free windows within a few line heights)
    noise = cv2.erode(spread, cv2.getStructuringElement(cv2.MORPH_RECT, (3 * k, 3 * k)))
    # flat: the window itself spans under FLAT_LEVELS grey levels at the whole-range window (text too faint to see
    # there included; a bone edge is not), and its noise (its quietest neighbour) is under one: text faint enough to
    # vanish at the whole range yet readable in a narrow window is several noise widths high; noisier regions
    # could hide no such text, and their noise would only feed the detector strokes
    level = (hi - lo) / 255
    flat = (spread < FLAT_LEVELS * level) & (noise < NOISE_LEVELS * level)
    if flat.mean() < MIN_FLAT_SHARE:
        return None
    # shown after a 3x3 blur: a stroke of text keeps most of its contrast, pixel noise falls to about half, so the
    # noise's own peaks stay under the detector's stroke contrast
    f = cv2.GaussianBlur(raw, (3, 3), 0)
    local = np.clip(128 + (f - mean) * (255.0 / FLAT_NOISE_WINDOWS) / np.maximum(noise, 1.0), 0, 255)
    # the non-flat surround fades to mid-grey over a few pixels: a hard mask edge would be a stroke of its own
    weight = cv2.blur(flat.astype(np.float32), (5, 5))
    return (128 + (local - 128) * weight).astype(np.uint8)
