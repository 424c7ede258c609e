"""Cheap text-candidate detector: where, on a reduced copy, something looks like a line of text.

Rendered text differs from anatomy in three ways this detector keys on, none of which needs a
model: strokes are thin (a morphological top-hat or black-hat with a kernel a little wider than a
stroke keeps them and drops bone, soft tissue and their edges), they have full local contrast
with sharp edges (anatomy and its noise are blurred by the detector), and characters sit in a
row of similar height. Most images have no such row and cost two morphology passes on a copy
of at most WORK_SIDE pixels; the OCR stage (ingest/text/ocr.py) looks only at the boxes found.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from ingest.text.components import Components, label_components, row_boxes

WORK_SIDE = 1024  # text of 1% of the image height is ~10 px here, still a row of strokes
LOW_PCT, HIGH_PCT = 0.5, 99.5  # the whole image's robust window: a few saturated or dead pixels do not set it
MIN_CONTRAST = 48  # a stroke response under this is no candidate stroke
# Measured on rendered text against real knees, real MRI (MRNet) and the phantom's synthetic bone
# texture (bench/burned_text.py): texture reaches a median stroke response of 64 at a separation up
# to 0.80, MRI noise 66-79 at 0.55-0.77; text lines sit at 67-255 and 0.69-0.98.
STRONG_STROKE = 66
VERY_STRONG_STROKE = 90
TWO_CLASSES = 0.84
MIXED_CLASSES = 0.78
# a row crossed this many times a line height of its width (6 at least: letters side by side, where an edge of
# anatomy crosses once or twice in all), with strokes of text's strength, is text even where its two classes blur:
# light text over bright bone (seed 2 of bench/burned_text.py, u0042: separation 0.58). Of the rows of 300 real
# knees and 60 clinical-size images the line tests see, none passes this that did not pass before.
BUSY_CROSSINGS = 1.5
BUSY_STROKE = 64
BUSY_CLASSES = 0.55
# On a copy at most SMALL_SIDE pixels (a 224 or 512 px knee), text a few percent high has strokes of a pixel or so,
# and anti-aliasing spreads them: dark serif labels turned along the edge (seed 2, t0055; seed 3, t0046) cross like
# text at strokes of 58-59. No row of 300 real 224 px knees passes the busy test at a stroke of 52, and the floor of
# 56 gave none of them, nor of the same knees at 384 and 512 px, a new candidate; 5 of 60 clinical-size images have
# rows that pass at 56-61, so the floor drops on small copies only.
SMALL_SIDE = 512
BUSY_STROKE_SMALL = 56
SURE_SEPARATION = 0.93  # two classes this clean, crossed like characters: text even when OCR cannot read it


@dataclass(frozen=True)
class Box:
    """A region in stored-pixel coordinates: rows y0:y1, columns x0:x1."""

    y0: int
    x0: int
    y1: int
    x1: int
    sure: bool = field(default=False, compare=False)  # the detector is sure it is text (candidates only)

    def padded(self, margin: int, shape: tuple[int, int]) -> "Box":
        return Box(max(self.y0 - margin, 0), max(self.x0 - margin, 0),
                   min(self.y1 + margin, shape[0]), min(self.x1 + margin, shape[1]))

    def scaled(self, factor: float) -> "Box":
        return Box(int(self.y0 * factor), int(self.x0 * factor), int(np.ceil(self.y1 * factor)), int(np.ceil(self.x1 * factor)),
                   self.sure)

    def transposed(self) -> "Box":
        return Box(self.x0, self.y0, self.x1, self.y1, self.sure)

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def width(self) -> int:
        return self.x1 - self.x0


def to_uint8(pixels: np.ndarray, lo_pct: float = LOW_PCT, hi_pct: float = HIGH_PCT) -> np.ndarray:
    """A robust window over the whole image: percentile `lo_pct`..`hi_pct` -> 0..255."""
    return windowed(pixels, *percentile_window(pixels, lo_pct, hi_pct))


def percentile_window(pixels: np.ndarray, lo_pct: float = LOW_PCT, hi_pct: float = HIGH_PCT) -> tuple[int, int]:
    """Percentiles `lo_pct` and `hi_pct` of the stored values (uint8 or uint16, so a histogram of a sample gives
    them); the sample's whole range when those meet."""
    step = max(1, int(np.sqrt(pixels.size / 65536)))
    counts = np.bincount(pixels[::step, ::step].ravel(), minlength=256)
    cdf = np.cumsum(counts) / counts.sum()
    lo, hi = int(np.searchsorted(cdf, lo_pct / 100)), int(np.searchsorted(cdf, hi_pct / 100))
    if hi <= lo:
        nz = np.flatnonzero(counts)
        lo, hi = int(nz[0]), int(nz[-1])
    return lo, hi


def windowed(pixels: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """lo..hi -> 0..255 (all 0 for an empty window)."""
    if hi <= lo:
        return np.zeros(pixels.shape, np.uint8)
    # saturating subtract, then scale with saturation: one pass each, for uint8 and uint16 alike
    return cv2.convertScaleAbs(cv2.subtract(pixels, lo), alpha=255.0 / (hi - lo))


def reduce(pixels: np.ndarray, side: int = WORK_SIDE) -> tuple[np.ndarray, float]:
    """The reduced copy (stored depth) and the factor from working to stored coordinates."""
    h, w = pixels.shape
    factor = max(h, w) / side
    if factor <= 1:
        return pixels, 1.0
    size = (round(w / factor), round(h / factor))
    k = int(factor)
    if k == 1:
        return cv2.resize(pixels, size, interpolation=cv2.INTER_AREA), factor
    # OpenCV's area resampling is a plain block mean at a whole factor and 5-7 times slower at any other (12-17 ms
    # on a 2500-3000 px image): block means first (the few rows past a whole block are left out), then the last
    # step of under 2x by interpolation
    blocks = cv2.resize(pixels[:h - h % k, :w - w % k], (w // k, h // k), interpolation=cv2.INTER_AREA)
    return (blocks if blocks.shape[::-1] == size else cv2.resize(blocks, size, interpolation=cv2.INTER_LINEAR)), factor


def stroke_kernel(height: int) -> int:
    """The side of the stroke response's square kernel on a working copy `height` pixels high."""
    return max(5, int(round(height * 0.012)) | 1)


def stroke_response(gray: np.ndarray) -> np.ndarray:
    """Thin bright and dark structures (top-hat and black-hat with a kernel wider than a stroke of
    text 4% of the image high): bone, soft tissue, a backing box and their edges drop out."""
    k = stroke_kernel(gray.shape[0])
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (k, k))
    top = cv2.morphologyEx(gray, cv2.MORPH_TOPHAT, kernel)
    return np.maximum(top, cv2.morphologyEx(gray, cv2.MORPH_BLACKHAT, kernel))


@dataclass(frozen=True)
class Rendering:
    """An 8-bit working copy the detector looks at, with its stroke response: computed once per image and read in
    both orientations (a square kernel's top-hat of the transposed copy is the transposed top-hat)."""

    gray: np.ndarray
    factor: float  # working -> stored coordinates
    response: np.ndarray
    strong: np.ndarray  # response >= the minimum contrast, as 0/1
    relative: bool = False  # contrast relative to local noise: stroke strength alone says nothing, two classes must
    across: bool = False  # the transposed view of the rendering it was made from
    # `strong`'s components, labelled once for both views (8-connectivity is the same either way round)
    _labelled: list = field(default_factory=list, compare=False, repr=False)

    @classmethod
    def of(cls, gray: np.ndarray, factor: float, min_contrast: int = MIN_CONTRAST,
           relative: bool = False, within: np.ndarray | None = None) -> "Rendering":
        """`within` (0/1): where strokes count (the rest of the rendering shows nothing to read)."""
        response = stroke_response(gray)
        strong = (response >= min_contrast).astype(np.uint8)
        return cls(gray, factor, response, strong if within is None else strong & within, relative)

    def transposed(self) -> "Rendering":
        t = cv2.transpose  # a blocked transpose: several times numpy's copy of a .T view
        return Rendering(t(self.gray), self.factor, t(self.response), t(self.strong), self.relative, not self.across,
                         self._labelled)

    def stroke_components(self) -> tuple[Components, bool]:
        """`strong`'s components, and whether they were labelled in the other view (then transposed to this one)."""
        if not self._labelled:
            self._labelled.append((label_components(self.strong), self.across))
        components, across = self._labelled[0]
        return components, across != self.across


def render(pixels: np.ndarray, min_contrast: int = MIN_CONTRAST) -> Rendering:
    """The image at a robust window over its whole range, reduced to the working size."""
    small, factor = reduce(pixels)
    return Rendering.of(to_uint8(small), factor, min_contrast)


def find_candidates(pixels: np.ndarray, min_contrast: int = MIN_CONTRAST) -> list[Box]:
    """Horizontal text lines at the whole-range window (ingest/text/oriented.py adds the other orientation and the
    local windows)."""
    return line_boxes(render(pixels, min_contrast))


def line_boxes(r: Rendering) -> list[Box]:
    """Rows of strokes that read as text, in stored coordinates of the rendering's orientation."""
    gray, response, strong, factor = r.gray, r.response, r.strong, r.factor
    h = gray.shape[0]
    busy = BUSY_STROKE_SMALL if max(gray.shape) <= SMALL_SIDE else BUSY_STROKE
    if not strong.any():  # most images: no thin structure of text-like contrast at all
        return []
    gap = max(3, int(round(h * 0.012)))
    stats = row_boxes(strong, gap)  # rows of strokes: characters closer than `gap` joined
    strokes = strong
    boxes = []
    if (stats[1:, cv2.CC_STAT_HEIGHT] > 0.2 * h).any():
        # rows that anatomy (a bone edge, noisy texture) joined into something taller than text: drop the tall and
        # sparse stroke blobs and group the rest again
        strokes = _stroke_blobs(r, h)
        stats = row_boxes(strokes, gap)
    widths, heights = stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT]
    lines = np.flatnonzero((heights >= 3) & (heights <= 0.2 * h) & (widths >= 1.5 * heights))
    for x, y, w, hh in stats[lines[lines > 0], :4].tolist():
        cut = np.s_[y:y + hh, x:x + w]
        spans = [(y, hh, x0, x1) for x0, x1 in _text_spans(gray[cut], strokes[cut], response[cut], r.relative, busy)]
        if not spans and not r.relative:
            # two lines a few pixels apart join into one row where a stroke of one touches the other, and the tests
            # are for a line: each line of the row on its own (light text over bone: 224 px knees, seed 2)
            for y0, y1 in _lines_of(strokes[cut]):
                line = np.s_[y + y0:y + y1, x:x + w]
                spans += [(y + y0, y1 - y0, x0, x1)
                          for x0, x1 in _text_spans(gray[line], strokes[line], response[line], r.relative, busy)]
        for top, height, x0, x1 in spans:
            sure = _sure_text(gray[top:top + height, x + x0:x + x1], strokes[top:top + height, x + x0:x + x1])
            boxes.append(Box(int(top * factor), int((x + x0) * factor), int(np.ceil((top + height) * factor)),
                             int(np.ceil((x + x1) * factor)), sure))
    return boxes


def _lines_of(strokes: np.ndarray) -> list[tuple[int, int]]:
    """The two lines (row ranges) of a row of strokes that two lines joined, split at its emptiest row in its middle
    half; none where no row there is nearly empty (a fifth of the rows' median count) or a side is under 3 rows."""
    hh = strokes.shape[0]
    if hh < 8:
        return []
    counts = cv2.reduce(strokes, 1, cv2.REDUCE_SUM, dtype=cv2.CV_32S).ravel()
    middle = counts[hh // 4:hh - hh // 4]
    cut = hh // 4 + int(np.argmin(middle))
    if counts[cut] > 0.2 * np.median(counts) or cut < 3 or hh - cut - 1 < 3:
        return []
    return [(0, cut), (cut + 1, hh)]


def _sure_text(gray: np.ndarray, strokes: np.ndarray) -> bool:
    """A line the detector is sure of without OCR: several characters' width, two flat intensity classes
    (text and a flat background: nothing anatomical looks like this) crossed four or more times a character."""
    hh, w = gray.shape
    if w < 5 * hh or hh < 4:
        return False
    _, binary = cv2.threshold(gray, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return bool(_crossings(binary) >= max(6, 0.8 * w / hh) and _separation(gray, binary) >= SURE_SEPARATION)


def _text_spans(gray: np.ndarray, strokes: np.ndarray, response: np.ndarray, relative: bool = False,
                busy: float = BUSY_STROKE) -> list[tuple[int, int]]:
    """The row, if it reads as text; else, for a long row (a caption that runs into anatomy or noise),
    the stretches of it four line heights wide that do, merged."""
    hh, w = strokes.shape
    if _looks_like_text(gray, strokes, response, relative, busy):
        return [(0, w)]
    if w < 6 * hh:
        return []
    spans: list[tuple[int, int]] = []
    for x0 in range(0, w - 4 * hh + 1, 2 * hh):
        cut = np.s_[:, x0:x0 + 4 * hh]
        if _looks_like_text(gray[cut], strokes[cut], response[cut], relative, busy):
            if spans and spans[-1][1] >= x0:
                spans[-1] = (spans[-1][0], x0 + 4 * hh)
            else:
                spans.append((x0, x0 + 4 * hh))
    return spans


def _stroke_blobs(r: Rendering, h: int) -> np.ndarray:
    """The rendering's stroke pixels in blobs no taller than a text line: long edges of anatomy drop out."""
    blobs, other_view = r.stroke_components()
    stats = blobs.stats[:, [1, 0, 3, 2, 4]] if other_view else blobs.stats  # x and y, width and height swapped
    bbox = stats[:, cv2.CC_STAT_HEIGHT] * stats[:, cv2.CC_STAT_WIDTH]
    keep = (stats[:, cv2.CC_STAT_HEIGHT] <= 0.2 * h) & (stats[:, cv2.CC_STAT_AREA] >= 3) & \
           (stats[:, cv2.CC_STAT_AREA] >= 0.1 * bbox)
    keep[0] = False
    return cv2.transpose(blobs.kept(keep)) if other_view else blobs.kept(keep)


def _looks_like_text(gray: np.ndarray, strokes: np.ndarray, response: np.ndarray, relative: bool = False,
                     busy: float = BUSY_STROKE) -> bool:
    """A row of characters: stroke pixels neither sparse nor solid; once binarised (Otsu, on the box
    alone, so light text on bright bone separates too) many crossings per row (2-4 per character,
    where an edge of anatomy crosses once or twice); and either strong strokes or two clean
    intensity classes (text and its background), which noise and trabecular texture are not."""
    hh, w = strokes.shape
    if not 0.08 <= cv2.countNonZero(strokes) / strokes.size <= 0.97:  # (numpy's mean: 4x the cost of a call)
        return False
    _, binary = cv2.threshold(gray, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    crossings = _crossings(binary)
    if crossings < 3 or crossings < 0.6 * w / hh:
        return False
    stroke, separation = float(np.median(response[strokes > 0])), _separation(gray, binary)
    if relative:  # strokes of noise shown at a narrow window can be strong too: the classes must be clean
        return separation >= TWO_CLASSES or (separation >= MIXED_CLASSES and stroke >= VERY_STRONG_STROKE)
    return separation >= TWO_CLASSES or (separation >= MIXED_CLASSES and stroke >= STRONG_STROKE) or \
        stroke >= VERY_STRONG_STROKE or \
        (crossings >= max(6, BUSY_CROSSINGS * w / hh) and stroke >= busy and separation >= BUSY_CLASSES)


def _crossings(binary: np.ndarray) -> float:
    """How often the busier half of a 0/1 window's rows cross between the classes, on average (in a block of two
    lines the rows between them cross nothing): 2-4 times per character of text, once for an edge of anatomy."""
    changes = cv2.absdiff(binary[:, 1:], binary[:, :-1])  # OpenCV: thousands of small windows per image
    per_row = np.sort(cv2.reduce(changes, 1, cv2.REDUCE_SUM, dtype=cv2.CV_32S).ravel())
    busier = per_row[len(per_row) // 2:]
    return float(busier.sum()) / len(busier) / 2


def _separation(gray: np.ndarray, binary: np.ndarray) -> float:
    """Otsu's effectiveness: between-class over total variance (1 for two flat levels, 0.64 for noise)."""
    # OpenCV's reductions: this runs on thousands of small windows per image, where numpy's per-call cost dominates
    gray, binary = np.ascontiguousarray(gray), np.ascontiguousarray(binary)
    mean, std = (float(v[0][0]) for v in cv2.meanStdDev(gray))
    share = cv2.countNonZero(binary) / binary.size
    if share in (0.0, 1.0) or std == 0:
        return 0.0
    ones = cv2.mean(gray, mask=binary)[0]
    gap = ones - (mean - share * ones) / (1 - share)
    return share * (1 - share) * gap * gap / (std * std)


def merged(boxes: list[Box]) -> list[Box]:
    """Overlapping boxes replaced by their bounding box until none overlap."""
    out = list(boxes)
    changed = True
    while changed:
        changed = False
        for i in range(len(out)):
            for j in range(i + 1, len(out)):
                a, b = out[i], out[j]
                if overlap(a, b):
                    out[i] = Box(min(a.y0, b.y0), min(a.x0, b.x0), max(a.y1, b.y1), max(a.x1, b.x1))
                    del out[j]
                    changed = True
                    break
            if changed:
                break
    return sorted(out, key=lambda b: (b.y0, b.x0))


def overlap(a: Box, b: Box) -> bool:
    return a.y0 < b.y1 and b.y0 < a.y1 and a.x0 < b.x1 and b.x0 < a.x1
