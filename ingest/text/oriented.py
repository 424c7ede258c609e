"""Candidate text lines at every orientation and window the screen looks at.

Labels along the left or right edge of a radiograph run at 90 or 270 degrees: the detector reads its renderings
in rows and, transposed, in columns (the stroke response is computed once; a square kernel's top-hat commutes with
the transpose). For images deeper than 8 bits a narrow-window rendering of the flat regions is read too
(ingest/text/local_window.py), so text that only a narrow window shows is a candidate; and a label drawn at the
image's extreme value over anatomy almost as bright is read in a window over the last levels before it
(ingest/text/extreme_value.py). OCR then reads each set at the orientations its axis allows (ingest/text/screen.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ingest.text.candidates import Box, Rendering, line_boxes, percentile_window, reduce, windowed
from ingest.text.extreme_value import extreme_value_renderings
from ingest.text.local_window import MIN_CONTRAST, letter_pixels, narrow_window_rendering, stroke_rows


@dataclass(frozen=True)
class CandidateSet:
    """Candidate boxes in stored coordinates. `turned`: lines run down the columns (text at 90 or 270 degrees);
    `narrow`: found in the narrow-window rendering (OCR reads them at the window of their own pixels)."""

    turned: bool
    narrow: bool
    boxes: list[Box]


def candidate_sets(pixels, filled: Sequence[Box] = ()) -> list[CandidateSet]:
    """`filled`: the regions an earlier pass of the screen masked (stored coordinates)."""
    small, factor = reduce(pixels)
    lo, hi = percentile_window(small)
    # (narrow, rendering, stroke rows, what becomes of its lines' candidates)
    renderings = [(False, Rendering.of(windowed(small, lo, hi), factor), [], _as_found)]
    local = narrow_window_rendering(small, lo, hi, [b.scaled(1 / factor) for b in filled])
    if local is not None:
        core = local.core()
        r = Rendering.of(local.gray, factor, MIN_CONTRAST, relative=True, within=core)
        # rows of strokes in a flat border, whatever their classes look like (thin serifs): masked even unread
        rows = [b for strokes, letters in ((r.strong, False), (letter_pixels(local.gray), True)) if strokes.any()
                for b in stroke_rows(local.gray, strokes, core, factor, letters)]
        renderings.append((True, r, rows, _as_found))
    # a label at the image's extreme value over anatomy almost as bright: read at its own pixels' window, like a
    # narrow-window candidate, split into its lines, and never masked unread (its rendering is two-level by
    # construction, sure of anything)
    renderings += [(True, e.rendering, [], e.lines) for e in extreme_value_renderings(small, lo, hi, factor)]
    sets = []
    for narrow, r, rows, candidates in renderings:
        lines = candidates(line_boxes(r))
        across = candidates([b.transposed() for b in line_boxes(r.transposed())] if r.strong.any() else [])
        sets.append(CandidateSet(False, narrow, lines + [b for b in rows if b.width >= b.height]))
        sets.append(CandidateSet(True, narrow, across + [b for b in rows if b.width < b.height]))
    return [s for s in sets if s.boxes]


def _as_found(boxes: list[Box]) -> list[Box]:
    return boxes
