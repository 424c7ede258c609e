"""The content box of an image: inside the uniform bands an export adds around it (a pad to square, a
letterbox, a scanner's black margin).

A band is lines (rows or columns) from one edge that are uniform: 99% of their pixels within 0.5% of the
image's range of the edge line's median. An export's pad is constant; at 2% a scanner's dark margin counted too,
and the CLAHE copy of such a knee, whose margin contrast enhancement had lifted, got another box than its
original (a signature cosine of 0.28 instead of 0.9+). Padding resized back is uniform except for the one or two lines
of resampling ringing at its inner edge, which stay inside the box. A band thinner than `MIN_BAND` of the
side is kept, so that an image's own thin dark margin does not make two copies' boxes differ.
"""

from __future__ import annotations

import numpy as np

TOLERANCE = 0.005  # of the image's range
UNIFORM_SHARE = 0.99
MIN_BAND = 0.03  # of the side


def _band(lines: np.ndarray, tol: float) -> int:
    """How many of `lines` (first = outermost, each a row of values) are uniform around the first's median."""
    v = float(np.median(lines[0]))
    if (np.abs(lines[0] - v) <= tol).mean() < UNIFORM_SHARE:
        return 0  # most images: no band, decided on one line
    uniform = (np.abs(lines - v) <= tol).mean(axis=1) >= UNIFORM_SHARE
    return int(np.argmin(uniform)) if not uniform.all() else len(uniform)


def content_box(pixels: np.ndarray) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) in stored pixels; the whole image when it has no band (or is nearly constant)."""
    h, w = pixels.shape
    step = max(1, -(-max(h, w) // 1024))  # a large image is measured on every step-th line and pixel
    x = np.asarray(pixels[::step, ::step], dtype=np.float32)
    span = float(x.max() - x.min()) if x.size else 0.0
    top, bottom, left, right = 0, x.shape[0], 0, x.shape[1]
    if span <= 0:
        return 0, h, 0, w
    tol = TOLERANCE * span
    for _ in range(2):  # padding on two sides: the second side's band is measured without the first's
        for side in ("top", "bottom", "left", "right"):
            box = x[top:bottom, left:right]
            lines = {"top": box, "bottom": box[::-1], "left": box.T, "right": box.T[::-1]}[side]
            if len(lines) <= 16:
                continue
            k = min(_band(lines, tol), len(lines) - 16)
            if k < MIN_BAND * (x.shape[0] if side in ("top", "bottom") else x.shape[1]):
                continue
            if side == "top":
                top += k
            elif side == "bottom":
                bottom -= k
            elif side == "left":
                left += k
            else:
                right -= k
    # back to stored pixels, rounded inwards (a measured line stands for `step` stored ones)
    return (min(h, top * step + (step - 1 if top else 0)), min(h, bottom * step), min(w, left * step + (step - 1 if left else 0)),
            min(w, right * step))
