"""Burned-in text screening at ingest (DICOM PS3.15 Clean Pixel Data Option, CID 7050 113101).

`screen(pixels)` runs before an image is stored: cheap candidates (candidates.py), OCR only on
them (ocr.py), and every region that reads as text is filled with one constant value, so no
window or level can bring it back. A second pass looks again at the masked image (a line next to
a masked one is often found only then). The caller decides what a found text means: mask
(store the cleaned pixels) or quarantine (`burned_in_text`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

import cv2
import numpy as np

from catalog.text_screening import TEXT_DETECTOR
from ingest.reasons import Quarantine
from ingest.text.candidates import SMALL_SIDE, Box, merged, overlap, to_uint8, windowed
from ingest.text.ocr import MIN_SCORE, Reading, TextLine, read_lines
from ingest.text.oriented import CandidateSet, candidate_sets

DETECTOR_VERSION = TEXT_DETECTOR  # recorded per image; the export's clean-pixel claim rests on it
MAX_PASSES = 3
# the turns OCR reads a region at, as flips of the crop in its set's view (rows: the image; columns: its transpose):
# rows at 0 and 180 degrees; columns at 90 and 270 (the transposed crop flipped up-down or left-right is the
# original turned a quarter one way or the other)
_TURNS = {False: ((False, False), (True, True)), True: ((False, True), (True, False))}


@dataclass
class ScreenResult:
    pixels: np.ndarray
    regions: list[Box] = field(default_factory=list)
    candidates: int = 0
    unread: int = 0  # regions masked because the detector was sure of text that OCR could not read

    @property
    def cleaned(self) -> bool:
        return bool(self.regions)


def is_text(line: TextLine, crop_height: int) -> bool:
    """What the recogniser reads is text when it is sure of a few characters on a line that is a line:
    on bone texture it reads '1', '11' or 'C' over the whole crop, with middling confidence."""
    if line.height > 0.7 * crop_height:
        return False
    letters = line.text.strip()
    if line.characters >= 3:
        return line.score >= MIN_SCORE
    return line.characters == 2 and line.score >= 0.9 and not set(letters) <= set("1lIi|!.:")


@cache
def _one_thread() -> None:
    """OpenCV on one thread, as OCR is (ingest/text/ocr.py): ingest runs files in parallel, and on images this
    small OpenCV's own threads cost more CPU than they save (0.96 against 0.62 ms a 224 px image)."""
    cv2.setNumThreads(1)


def screen(pixels: np.ndarray) -> ScreenResult:
    _one_thread()
    result = ScreenResult(pixels)
    looked: list[Box] = []
    for _ in range(MAX_PASSES):
        sets = [CandidateSet(c.turned, c.narrow, [b for b in c.boxes if not any(_inside(b, seen) for seen in looked)])
                for c in candidate_sets(result.pixels, result.regions)]
        sets = [c for c in sets if c.boxes]
        if not sets:
            break
        found: list[Box] = []
        for c in sets:
            result.candidates += len(c.boxes)
            found += _found_in(result, c)
            looked += c.boxes
        if not found:
            break
        result.regions = merged(result.regions + found)
        result.pixels = _masked(pixels, result.regions)
    return result


def _found_in(result: ScreenResult, c: CandidateSet) -> list[Box]:
    """Text regions of one candidate set, in stored coordinates (a turned set is read in the transposed view)."""
    view = result.pixels.T if c.turned else result.pixels
    boxes = [b.transposed() for b in c.boxes] if c.turned else c.boxes
    found = []
    for region in _regions(boxes, view.shape):
        got, unread = _text_in(view, region, boxes, c)
        result.unread += unread
        found += [b.transposed() for b in got] if c.turned else got
    return found


def _regions(boxes: list[Box], shape: tuple[int, int]) -> list[Box]:
    """Each candidate with room around it (the line above or below, the rest of the line), merged."""
    return merged([Box(max(b.y0 - 2 * b.height, 0), max(b.x0 - 12 * b.height, 0),
                        min(b.y1 + 2 * b.height, shape[0]), min(b.x1 + 12 * b.height, shape[1])) for b in boxes])


def _text_in(view: np.ndarray, region: Box, candidates: list[Box], c: CandidateSet) -> tuple[list[Box], int]:
    """(text boxes in the view's coordinates, how many of them were masked unread)."""
    crop = np.ascontiguousarray(view[region.y0:region.y1, region.x0:region.x1])
    inside = [b for b in candidates if overlap(b, region)]
    line_height = int(np.median([b.height for b in inside])) if inside else region.height
    found: list[Box] = []
    for gray in _crop_renderings(crop, view, inside, c.narrow):
        # the next rendering too while a candidate is left unread: the crop's own window can read a neighbouring
        # line (in anatomy) and show the faint one, on its flat border, as black. Not where OCR's detector found
        # nothing text-like at all in this one (a clean image's candidate, mostly: on the bench's text images the
        # next rendering never read a line then)
        reading = _read_turned(gray, line_height, c.turned, max(view.shape) <= SMALL_SIDE)
        found += [Box(region.y0 + ln.y0, region.x0 + ln.x0, region.y0 + ln.y1, region.x0 + ln.x1)
                  for ln in reading.lines]
        if not reading.detected or (found and all(any(overlap(b, f) for f in found) for b in inside)):
            break
    # a line the detector is sure of (two flat classes crossed like characters) is masked even unread, also where
    # OCR read another line of the region (an outlined bold line can read while the one beside it does not)
    sure = [b.padded(max(2, b.height // 3), view.shape) for b in inside if b.sure and not any(overlap(b, f) for f in found)]
    if not found:
        return sure, len(sure)
    # the candidates the text belongs to are masked whole (the detector saw strokes there), with the
    # margin of a line: the recogniser's boxes can clip ascenders and the first or last character
    margin = max(2, int(np.median([b.height for b in found])) // 3)
    found += [b for b in inside if any(overlap(b, f) for f in found)]
    return [b.padded(margin, view.shape) for b in found] + sure, len(sure)


def _crop_renderings(crop: np.ndarray, view: np.ndarray, inside: list[Box], narrow: bool):
    """For a narrow-window candidate first the window of the candidates' own pixels (the crop's can span anatomy and
    hide the faint text again), widened past the text's side: a line that runs off the flat border onto brighter
    (or darker) anatomy shows there at mid-grey, not saturated with it. Then the crop at its own robust window."""
    if narrow and inside:
        values = np.concatenate([view[b.y0:b.y1, b.x0:b.x1].ravel() for b in inside])
        lo, mid, hi = (float(v) for v in np.percentile(values, [1, 50, 99.5]))
        # the border fills most of a candidate's box: the text lies on the far side of the median
        lo, hi = (lo, 2 * hi - lo) if mid - lo <= hi - mid else (max(2 * lo - hi, 0), hi)
        yield windowed(crop, int(lo), int(hi))
    yield to_uint8(crop, 1, 99.5)


def _read_turned(gray: np.ndarray, line_height: int, turned: bool, small: bool) -> Reading:
    """Lines read at the turns the set's axis allows, in the crop's coordinates (and the regions OCR's detector
    found). The other turn is read where the first reads nothing, and on a `small` image (at most SMALL_SIDE px)
    even where the first turn's detector found no region at all: the detector is not turn-invariant for text of
    3-4 px lines (a turned label on a 224 px knee, seed 2 of the bench: nothing found at one turn, read at 0.92 at
    the other). On larger images, of the 937 crops of the bench's text corpora (seeds 0 and 2, and two earlier
    corpora) the other turn never read a line where the first found no region; and there the candidates of clean
    images, which the detector finds nothing in, cost one read instead of two."""
    h, w = gray.shape
    detected = 0
    for flip_y, flip_x in _TURNS[turned]:
        image = gray[::-1 if flip_y else 1, ::-1 if flip_x else 1]
        reading = read_lines(np.ascontiguousarray(image), line_height, accept=lambda ln: is_text(ln, h))
        detected += reading.detected
        if reading.lines:
            return Reading([TextLine(h - ln.y1 if flip_y else ln.y0, w - ln.x1 if flip_x else ln.x0,
                                     h - ln.y0 if flip_y else ln.y1, w - ln.x0 if flip_x else ln.x1, ln.text, ln.score)
                            for ln in reading.lines], detected)
        if not reading.detected and not small:
            break
    return Reading([], detected)


def _masked(pixels: np.ndarray, boxes: list[Box]) -> np.ndarray:
    """One constant per box (the median of a ring around it; boxes do not overlap): no window can
    separate text from fill."""
    out = pixels.copy()
    for b in boxes:
        ring = pixels[max(b.y0 - 2, 0):b.y1 + 2, max(b.x0 - 2, 0):b.x1 + 2]
        out[b.y0:b.y1, b.x0:b.x1] = np.median(ring).astype(pixels.dtype)
    return out


def _inside(a: Box, b: Box) -> bool:
    return a.y0 >= b.y0 and a.y1 <= b.y1 and a.x0 >= b.x0 and a.x1 <= b.x1


POLICIES = ("mask", "quarantine", "off")


def screen_frame(frame, policy: str) -> tuple[np.ndarray, dict]:
    """A reader's frame under a source's policy -> the pixels to store and the catalog columns.
    mask: text regions filled; quarantine: text (or a declared burned-in annotation) sets the file
    aside; off: stored as read and recorded as never screened (the export then claims nothing)."""
    if policy == "off":
        return frame.pixels, {"text_detector": None, "pixels_cleaned": None, "text_regions": None,
                              "text_regions_unread": None}
    if policy == "quarantine" and frame.attrs.get("burned_in_declared"):
        raise Quarantine("burned_in_annotation", "BurnedInAnnotation is YES")
    result = screen(frame.pixels)
    if policy == "quarantine" and result.cleaned:
        raise Quarantine("burned_in_text", f"{len(result.regions)} text regions in frame {frame.attrs.get('frame_index', 0)}")
    return result.pixels, {"text_detector": DETECTOR_VERSION, "pixels_cleaned": result.cleaned,
                           "text_regions": len(result.regions), "text_regions_unread": result.unread}
