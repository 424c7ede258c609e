"""A second rendering for images deeper than 8 bits: flat regions seen through a narrow window.

In a 12-16-bit image, text a few tens of levels above a dark border (or below a bright one) is a fraction of one
grey level at the whole-range window, and at the declared window too; a narrow window over the border shows it
plainly. "Nothing readable at any window" needs the screen to look there as well. This rendering does, on the
detector's reduced copy: where the image is flat (its local spread under a few grey levels of the whole-range
window, and reaching the image's edge: borders, collimation, the background outside the body), each pixel's offset from its neighbourhood's mean
is shown at a window of FLAT_NOISE_WINDOWS times the local noise; everywhere else it is mid-grey. Text there has
full contrast, noise a quarter of it, and the detector's own tests (two clean classes crossed like characters)
tell them apart. The neighbourhood's mean and noise are taken without the text, which would pull them its way and
show itself at a fraction of its contrast. Costs a few box filters on the reduced copy; 8-bit images skip it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from ingest.text.candidates import Box, stroke_kernel
from ingest.text.components import grown_components, label_components

FLAT_LEVELS = 4.0  # a region whose local spread is under this many grey levels of the whole-range window is flat
NOISE_LEVELS = 1.0  # ... and whose noise is under this many
FLAT_NOISE_WINDOWS = 12.0  # the narrow window's width, in the local noise: noise spans +-21 grey levels, text 4x
# the noise above is its own least local spread; text at 4 noise widths or more stands at 85+ grey levels
MIN_CONTRAST = 80
MIN_FLAT_SHARE = 0.01
MIN_GLYPHS = 5  # character-sized stroke blobs side by side in a flat region: a line of text
QUARTER = 4
OUTLIER = 3.0  # a pixel this many noise widths off the local mean is no sample of the local level
MAD_TO_SIGMA = 1.4826  # the median absolute deviation of Gaussian noise, in its sigma
EDGE_MAJORITY = 0.75  # a pulled cell near a flat region's edge takes the retried level only where it holds this share
INFLATED = 1.5  # a flat cell's noise this many times the quiet part's: measured again, robustly
WORD_HEIGHT = 0.03  # a blob of strokes no taller than this share of the image ...
WORD_FILL = 0.3  # ... and this full of its box is a word (letters joined), not an edge
LETTER_ROW_LINES = 4  # a row of letter pixels is at most this many letters thick (a label of a few lines)


@dataclass(frozen=True)
class NarrowView:
    gray: np.ndarray  # the 8-bit rendering: flat regions at a narrow window, mid-grey elsewhere
    flat: np.ndarray  # how far each pixel is inside a flat region (0..1, float32)

    def core(self) -> np.ndarray:
        """0/1: the flat regions less a stroke kernel along their edges. There the rendering fades to mid-grey, and
        anatomy just past an edge (a skin line, soft tissue beside the background) shows as a ridge: strokes of
        its own, in a row along the edge, that no text made."""
        k = stroke_kernel(self.gray.shape[0])
        return cv2.erode((self.flat >= 0.99).astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_RECT, (k, k)))


def narrow_window_rendering(small: np.ndarray, lo: float, hi: float, filled: Sequence[Box] = ()
                            ) -> NarrowView | None:
    """The 8-bit rendering of the flat regions of the detector's reduced copy `small`, or None where there is
    nothing to show: an 8-bit image, or no flat region. `lo`..`hi`: the whole-range window (stored values).
    `filled`: regions the screen has already masked, in `small`'s coordinates (no sample of the image's noise)."""
    if small.dtype.itemsize < 2 or hi - lo <= 255:
        return None  # at most 256 levels in the window: the whole-range rendering already shows every step
    raw = small.astype(np.float32)
    h, w = raw.shape
    k = max(15, int(round(max(h, w) * 0.05)) | 1)  # text a small share of each window: a faint halo
    # which regions are flat is decided on a copy a quarter the size (the decision is coarse; this is the cheap
    # exit for most images): flat means the window itself spans under FLAT_LEVELS grey levels at the whole-range
    # window (text too faint to see there included; a bone edge is not), and its noise (its quietest neighbour, a
    # line of text being short across) is under NOISE_LEVELS: text faint enough to vanish at the whole range yet
    # readable in a narrow window is several noise widths high; noisier regions could hide no such text
    coarse = _quarter(raw.shape)
    kq = max(3, round(k / QUARTER) | 1)
    mean_q, spread_q = _local_moments(raw, coarse, kq)
    quietest = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * k // QUARTER + 1,) * 2)
    noise_q = cv2.erode(_without(spread_q, filled, kq), quietest)
    level = (hi - lo) / 255
    smooth_q = spread_q < FLAT_LEVELS * level
    quiet_q = _touching_the_edge(smooth_q & (noise_q < NOISE_LEVELS * level))
    flat_q = _grown(quiet_q, smooth_q)
    if flat_q.mean() < MIN_FLAT_SHARE:
        return None
    # what was joined (a label's own spread is no noise) is shown at the noise of the quiet part it joins
    quiet_noise = _quiet_noise(noise_q, quiet_q, flat_q)
    noise_q = np.where(flat_q & ~quiet_q, quiet_noise, noise_q).astype(np.float32)
    noise = _full_size_floor(noise_q, (w, h))
    # the band's level without the text's pull, found in two steps: within the plain noise estimate (which the text
    # inflates: wide enough to keep the band's own pixels about a pulled mean), then within the band's own noise
    plain_q = mean_q
    mean_q = _mean_without_outliers(raw, mean_q, plain_q, noise, kq, flat_q)
    robust_q = _robust_noise(raw, noise_q, flat_q, quiet_noise, k)
    if robust_q is not noise_q:
        noise = _full_size_floor(robust_q, (w, h))
        mean_q = _mean_without_outliers(raw, mean_q, plain_q, noise, kq, flat_q)
    mean = cv2.resize(mean_q, (w, h), interpolation=cv2.INTER_LINEAR)
    # the non-flat surround fades to mid-grey over a few pixels: a hard mask edge would be a stroke of its own
    weight = cv2.resize(flat_q.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    # shown after a 3x3 blur: a stroke of text keeps most of its contrast, pixel noise falls to about half, so the
    # noise's own peaks stay under the detector's stroke contrast
    # (in place: each full-size float temporary costs as much as the arithmetic)
    local = cv2.GaussianBlur(raw, (3, 3), 0)
    local -= mean
    local *= 255.0 / FLAT_NOISE_WINDOWS
    local /= noise
    np.clip(local, -128, 127, out=local)
    local *= weight
    local += 128
    return NarrowView(local.astype(np.uint8), weight)


def _without(spread_q: np.ndarray, filled: Sequence[Box], kq: int) -> np.ndarray:
    """`spread_q` with the cells a filled region reaches (its windows, kq wide) left out of the noise estimate: a
    mask's constant fill has no noise, and as the quietest neighbour it would set a whole band's noise to nothing,
    its texture then shown at full contrast on the screen's next pass."""
    if not filled:
        return spread_q
    out = spread_q.copy()
    h, w = out.shape
    for b in filled:
        out[max(b.y0 // QUARTER - kq // 2, 0):min(-(-b.y1 // QUARTER) + kq // 2, h),
            max(b.x0 // QUARTER - kq // 2, 0):min(-(-b.x1 // QUARTER) + kq // 2, w)] = np.inf
    return out


def _quiet_noise(noise_q: np.ndarray, quiet_q: np.ndarray, flat_q: np.ndarray) -> float | np.ndarray:
    """The noise of the quiet part of each cell's flat region: the median over the image's quiet cells, or a region's
    own where that is well under it (a quarter-size map then). A thin border band is quiet at a level or two while a
    large flat patch elsewhere (saturated bone, at 8-10 times that noise) sets the median; a label filling the band
    is shown (and its inflated noise judged) at its own region's noise, not at the patch's."""
    quiet = noise_q[quiet_q]
    quiet_noise = float(np.median(quiet))
    low = quiet < quiet_noise / INFLATED
    if not low.any():  # no region of its own that quiet
        return quiet_noise
    n, regions = cv2.connectedComponents(flat_q.astype(np.uint8), connectivity=4)
    of_quiet = regions[quiet_q]
    own = np.full(n, quiet_noise, np.float32)
    for i in np.unique(of_quiet[low]).tolist():
        own[i] = min(quiet_noise, float(np.median(quiet[of_quiet == i])))
    if not (own < quiet_noise / INFLATED).any():
        return quiet_noise
    return np.where(own < quiet_noise / INFLATED, own, quiet_noise).astype(np.float32)[regions]


def _full_size_floor(noise_q: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The quarter-size noise at full size, at least one level (a window narrower than a level shows nothing)."""
    return cv2.max(cv2.resize(noise_q, size, interpolation=cv2.INTER_LINEAR), 1.0)


def _robust_noise(raw: np.ndarray, noise_q: np.ndarray, flat_q: np.ndarray, quiet_noise: float | np.ndarray, k: int
                  ) -> np.ndarray:
    """`noise_q` where a line of text inflates it: in a thin border band every window holds some text, so the
    quietest neighbour's spread is the text's, several times the band's noise, and the text shows at a fraction of
    its contrast. Where flat cells' noise stands well above the quiet part's, it is measured again per tile as the
    median absolute deviation, which a line's few text pixels hardly move while smooth texture moves it as much as
    the spread (texture is not amplified); each such patch takes the value of its least covered tile (dense bold
    text moves a tile's too), so a label shows at one contrast throughout."""
    suspect = flat_q & (noise_q > INFLATED * quiet_noise)
    if not suspect.any():
        return noise_q
    n, patches = cv2.connectedComponents(suspect.astype(np.uint8), connectivity=8)
    cells = max(1, k // QUARTER)  # a tile of about the spread's window, in quarter cells
    side = cells * QUARTER
    robust = np.full(n, np.inf)
    ys, xs = np.nonzero(suspect)
    for i, j in {(y // cells, x // cells) for y, x in zip(ys.tolist(), xs.tolist())}:
        tile = raw[i * side:(i + 1) * side, j * side:(j + 1) * side]
        spread = MAD_TO_SIGMA * float(np.median(np.abs(tile - np.median(tile))))
        inside = np.unique(patches[i * cells:(i + 1) * cells, j * cells:(j + 1) * cells])
        robust[inside] = np.minimum(robust[inside], spread)
    return np.where(suspect, np.minimum(noise_q, np.maximum(robust[patches], quiet_noise)), noise_q).astype(np.float32)


def _mean_without_outliers(raw: np.ndarray, mean_q: np.ndarray, plain_q: np.ndarray, noise: np.ndarray, kq: int,
                           flat_q: np.ndarray) -> np.ndarray:
    """The local mean of the pixels within OUTLIER noise widths of the local mean `mean_q`, both on the quarter-size
    grid (a smooth field, summed there): a line of text pulls the plain mean (`plain_q`) its way (its letters show
    at a fraction of their contrast and the gaps between them at the other polarity), and at a band's edge the
    anatomy beside it does; neither is a sample of the band's level. Where bold or dense text pulled it further than
    that (most of a flat cell's pixels are outliers: the band on one side, the text on the other), the band's level
    is first found from the side of `mean_q` that holds most of the pixels."""
    h, w = raw.shape
    centre = cv2.resize(mean_q, (w, h), interpolation=cv2.INTER_LINEAR)
    limit = cv2.multiply(noise, OUTLIER)
    mean, share = _inlier_mean(raw, centre, limit, kq)
    # in the whole flat region: a thin band's last line can lie at its very edge, where the band shows at full
    # weight (seed 2, f0035; seed 3, f0027: the line's halo hid both lines). Within a quarter of a window of the
    # edge, though, the anatomy beside a band pulls it too, and a retry there that finds a bare majority turns a
    # ridge of that anatomy into strokes (seed 0, u0055): there the band's level must hold most of the pixels
    pulled = (share < 0.5) & flat_q
    if pulled.any():
        centre_q = np.where(pulled, _majority_side_mean(raw, centre, plain_q, kq), mean_q).astype(np.float32)
        again, again_share = _inlier_mean(raw, cv2.resize(centre_q, (w, h), interpolation=cv2.INTER_LINEAR), limit, kq)
        edge = cv2.getStructuringElement(cv2.MORPH_RECT, (kq // 2 | 1,) * 2)
        inner = cv2.erode(flat_q.astype(np.uint8), edge) > 0
        fixed = pulled & (again_share >= np.where(inner, 0.5, EDGE_MAJORITY))
        mean, share = np.where(fixed, again, mean), np.where(fixed, again_share, share)
    return np.where(share >= 0.5, mean, mean_q).astype(np.float32)


def _inlier_mean(raw: np.ndarray, centre: np.ndarray, limit: np.ndarray, kq: int) -> tuple[np.ndarray, np.ndarray]:
    """The local mean, on the quarter-size grid, of the pixels closer than `limit` (OUTLIER noise widths) to
    `centre` (both full size), and their share."""
    return _masked_mean(raw, cv2.compare(cv2.absdiff(raw, centre), limit, cv2.CMP_LT), kq)


def _majority_side_mean(raw: np.ndarray, centre: np.ndarray, plain_q: np.ndarray, kq: int) -> np.ndarray:
    """The quarter-size local mean of the pixels on the side of `centre` (full size) that holds most of them: a band
    pulled off its level by text lies all on one side of the pulled mean, and is most of the window. `plain_q`: the
    local mean of all of them."""
    low, share = _masked_mean(raw, cv2.compare(raw, centre, cv2.CMP_LT), kq)
    high = (plain_q - low * share) / np.maximum(1 - share, 1e-6)
    return np.where(share >= 0.5, low, high)


def _masked_mean(raw: np.ndarray, mask: np.ndarray, kq: int) -> tuple[np.ndarray, np.ndarray]:
    """The local mean of `raw` where `mask` (0/255) is set, on the quarter-size grid (kq x kq windows); the mask's
    share."""
    coarse = _quarter(raw.shape)
    share = cv2.blur(cv2.resize(mask, coarse, interpolation=cv2.INTER_AREA).astype(np.float32) / 255, (kq, kq))
    total = cv2.blur(cv2.resize(cv2.bitwise_and(raw, raw, mask=mask), coarse, interpolation=cv2.INTER_AREA), (kq, kq))
    return total / np.maximum(share, 1e-6), share


def _quarter(shape: tuple[int, int]) -> tuple[int, int]:
    """The quarter-size grid's (width, height) for a rendering of `shape` (OpenCV's order)."""
    return max(shape[1] // QUARTER, 1), max(shape[0] // QUARTER, 1)


def _local_moments(raw: np.ndarray, coarse: tuple[int, int], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The mean and standard deviation of `raw` in k x k windows of a copy at size `coarse`, from block means of the
    values and of their squares: within 1-2% of the full-size windows' spread averaged down, at a third of the cost
    (most 16-bit images stop after it). Known: float32 squares of 16-bit values keep a quiet band's noise to about a
    level; exact squares (of offsets from mid-window) reopened a faint leak the quantised noise masks, so they are
    not in (docs/benchmarks.md, fifth round)."""
    mean = cv2.blur(cv2.resize(raw, coarse, interpolation=cv2.INTER_AREA), (k, k))
    square = cv2.blur(cv2.resize(raw * raw, coarse, interpolation=cv2.INTER_AREA), (k, k))
    return mean, np.sqrt(np.maximum(square - mean * mean, 0))


def letter_pixels(gray: np.ndarray) -> np.ndarray:
    """The pixels of the narrow rendering `gray` at least MIN_CONTRAST off its mid-grey, as 0/1: the letters
    themselves at the finest scale. The stroke response's closing joins small serif letters into word blobs (and
    one line into the next); these stay apart as letters. Rows of them are candidates OCR must read: a soft edge
    of anatomy inside a flat region breaks into dashes of one polarity here too."""
    return (cv2.absdiff(gray, 128) >= MIN_CONTRAST).astype(np.uint8)


def stroke_rows(gray: np.ndarray, strong: np.ndarray, core: np.ndarray, factor: float, letters: bool = False
                ) -> list[Box]:
    """Rows of character-sized strokes of one polarity well inside a flat region of the narrow rendering `gray`,
    in stored coordinates: sure (masked even unread), or, for `letters` (strokes from letter_pixels), candidates OCR
    must read. Thin serif text a few levels off a flat border blurs into three or more classes at this window, so
    the two-class tests of the line detector miss it; but a flat border carries no anatomy, and its noise at this
    window crosses the stroke contrast in specks of both polarities, never in five character-sized blobs of one
    polarity side by side. Taller than wide: a turned label."""
    h, w = strong.shape
    mask = strong & core
    glyphs_of = label_components(mask)
    n, stats = glyphs_of.count, glyphs_of.stats
    bh, bw, area = stats[:, cv2.CC_STAT_HEIGHT], stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_AREA]
    # small serif text joins its letters into word blobs: a blob no taller than a line and filled like letters counts
    # as one character per line height of its width
    across, along = np.minimum(bh, bw), np.maximum(bh, bw)
    word = (across <= WORD_HEIGHT * h) & (along >= 2 * across) & (area >= WORD_FILL * bh * bw)
    glyph = (area >= 6) & (along >= 4) & (((bh <= 0.1 * h) & (bw <= 0.1 * w)) | word)
    glyph[0] = False
    count = glyph.astype(np.int64)
    for i in np.flatnonzero(glyph & word):
        count[i] = _letters_in(glyphs_of.of(i))
    if count.sum() < MIN_GLYPHS:
        return []
    # per stroke pixel (all within the labelled box), not per pixel of the image: strokes are a few percent of it
    x0, y0, w0, h0 = glyphs_of.box
    stroke = glyphs_of.box_labels > 0
    bright = np.bincount(glyphs_of.box_labels[stroke], weights=gray[y0:y0 + h0, x0:x0 + w0][stroke],
                         minlength=n) / np.maximum(area, 1) > 128
    gap = max(3, int(round(h * 0.012)))
    rows_of = grown_components(glyphs_of.kept(glyph), gap, square=True)
    m, row_stats = rows_of.count, rows_of.stats
    row_of = rows_of.at(stats[:, cv2.CC_STAT_TOP] + bh // 2, stats[:, cv2.CC_STAT_LEFT] + bw // 2)
    # letters per row, of each polarity (one pass over the glyphs: texture can make hundreds of rows)
    on_row = row_of * glyph
    letters_on = np.bincount(on_row, weights=count, minlength=m)
    bright_on = np.bincount(on_row, weights=count * bright, minlength=m)
    same = np.maximum(bright_on, letters_on - bright_on)
    across_row = row_stats[:, cv2.CC_STAT_WIDTH:cv2.CC_STAT_HEIGHT + 1]
    # a row (or a column) of characters of one polarity, not a patch of noise or an edge of anatomy
    rows_ok = (same >= MIN_GLYPHS) & (same >= 0.85 * letters_on) & (across_row.max(1) >= 2 * across_row.min(1))
    rows_ok[0] = False
    boxes = []
    for i in np.flatnonzero(rows_ok):
        x, y, rw, rh = row_stats[i, :4].tolist()
        mine = glyph & (row_of == i)
        # letters: a few lines thick, where the dashes of a soft edge or texture spread wider than their size
        if letters and min(rw, rh) - 2 * gap > LETTER_ROW_LINES * np.median((bh if rw >= rh else bw)[mine]):
            continue
        boxes.append(Box(int(y * factor), int(x * factor), int(np.ceil((y + rh) * factor)),
                         int(np.ceil((x + rw) * factor)), not letters))
    return boxes


def _letters_in(blob: np.ndarray) -> int:
    """How many letters a long blob (0/1 in its box) holds, from how often a line along it crosses a stroke (a
    letter crosses two to four times; the edge of a smooth patch, twice in all)."""
    h, w = blob.shape
    crossings = np.count_nonzero(np.diff(blob.astype(np.int8), axis=1 if w >= h else 0)) / max(min(w, h), 1)
    return max(1, int(crossings // 3))


def _grown(flat: np.ndarray, smooth: np.ndarray) -> np.ndarray:
    """The flat regions with every smooth stretch joined to them: a label that fills a border band has no quiet
    neighbour of its own (the noise test fails across it) but is as smooth at the whole range as the band."""
    n, labels = cv2.connectedComponents(smooth.astype(np.uint8), connectivity=4)
    keep = np.bincount(labels[flat], minlength=n) > 0
    keep[0] = False
    return flat | keep[labels]


def _touching_the_edge(flat: np.ndarray) -> np.ndarray:
    """The flat regions that reach the image's edge: collimation, shutters, the background around the body. Smooth
    patches inside anatomy are left out (their texture, shown at a narrow window, is all strokes and no text)."""
    n, labels = cv2.connectedComponents(flat.astype(np.uint8), connectivity=4)
    keep = np.zeros(n, bool)
    keep[np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])] = True
    keep[0] = False
    return keep[labels]
