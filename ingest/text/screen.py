"""Burned-in text screening at ingest (DICOM PS3.15 Clean Pixel Data Option, CID 7050 113101).

`screen(pixels)` runs before an image is stored: cheap candidates (candidates.py), OCR only on
them (ocr.py), and every region that reads as text is filled with one constant value, so no
window or level can bring it back. A second pass looks again at the masked image (a line next to
a masked one is often found only then). The caller decides what a found text means: mask
(store the cleaned pixels) or quarantine (`burned_in_text`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ingest.reasons import Quarantine
from ingest.text.candidates import Box, find_candidates, merged, overlap, to_uint8
from ingest.text.ocr import MIN_SCORE, TextLine, read_lines

DETECTOR_VERSION = "ortho-text-1 (morphology candidates + RapidOCR PP-OCRv6)"
MAX_PASSES = 3


@dataclass
class ScreenResult:
    pixels: np.ndarray
    regions: list[Box] = field(default_factory=list)
    candidates: int = 0

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


def screen(pixels: np.ndarray) -> ScreenResult:
    result = ScreenResult(pixels)
    looked: list[Box] = []
    for _ in range(MAX_PASSES):
        boxes = [b for b in find_candidates(result.pixels) if not any(_inside(b, seen) for seen in looked)]
        if not boxes:
            break
        result.candidates += len(boxes)
        found = []
        for region in _regions(boxes, result.pixels.shape):
            found += _text_in(result.pixels, region, boxes)
        looked += boxes
        if not found:
            break
        result.regions = merged(result.regions + found)
        result.pixels = _masked(pixels, result.regions)
    return result


def _regions(boxes: list[Box], shape: tuple[int, int]) -> list[Box]:
    """Each candidate with room around it (the line above or below, the rest of the line), merged."""
    return merged([Box(max(b.y0 - 2 * b.height, 0), max(b.x0 - 12 * b.height, 0),
                        min(b.y1 + 2 * b.height, shape[0]), min(b.x1 + 12 * b.height, shape[1])) for b in boxes])


def _text_in(pixels: np.ndarray, region: Box, candidates: list[Box]) -> list[Box]:
    crop = pixels[region.y0:region.y1, region.x0:region.x1]
    inside = [b for b in candidates if overlap(b, region)]
    line_height = int(np.median([b.height for b in inside])) if inside else region.height
    lines = read_lines(to_uint8(crop, 1, 99.5), line_height, accept=lambda ln: is_text(ln, crop.shape[0]))
    found = [Box(region.y0 + ln.y0, region.x0 + ln.x0, region.y0 + ln.y1, region.x0 + ln.x1) for ln in lines]
    if not found:
        return []
    # the candidates the text belongs to are masked whole (the detector saw strokes there), with the
    # margin of a line: the recogniser's boxes can clip ascenders and the first or last character
    margin = max(2, int(np.median([b.height for b in found])) // 3)
    found += [b for b in inside if any(overlap(b, f) for f in found)]
    return [b.padded(margin, pixels.shape) for b in found]


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
        return frame.pixels, {"text_detector": None, "pixels_cleaned": None, "text_regions": None}
    if policy == "quarantine" and frame.attrs.get("burned_in_declared"):
        raise Quarantine("burned_in_annotation", "BurnedInAnnotation is YES")
    result = screen(frame.pixels)
    if policy == "quarantine" and result.cleaned:
        raise Quarantine("burned_in_text", f"{len(result.regions)} text regions in frame {frame.attrs.get('frame_index', 0)}")
    return result.pixels, {"text_detector": DETECTOR_VERSION, "pixels_cleaned": result.cleaned,
                           "text_regions": len(result.regions)}
