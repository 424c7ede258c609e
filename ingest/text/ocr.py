"""OCR of candidate regions with RapidOCR (PP-OCR detection + recognition as ONNX models shipped
inside the wheel: offline, pip only). One engine per process, one thread: ingest parallelises
across files, and most images never get here (ingest/text/candidates.py decides)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

MIN_SCORE = 0.5  # recognition confidence of a line that counts as text
TARGET_LINE_PX = 24  # candidate rows are scaled to about this height before detection
# ... by at least MIN_SCALE: lines up to 240 px tall reach that height. A floor of 0.25 left a 135 px line of a
# 3000 px image at 34 px, and the detector's cost grows with the square of the scale (on the bench's 432 text
# images nothing more was readable after)
MIN_SCALE = 0.1
MAX_SIDE = 1024


@dataclass(frozen=True)
class TextLine:
    """A detected line in the coordinates of the array given to `read_lines`."""

    y0: int
    x0: int
    y1: int
    x1: int
    text: str
    score: float

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def characters(self) -> int:
        return sum(c.isalnum() for c in self.text)


@lru_cache(maxsize=1)
def engine():
    from rapidocr import RapidOCR

    for name in ("RapidOCR", "rapidocr"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    params = {"Global.log_level": "critical", "Global.use_cls": False, "Global.min_side_len": 8,
              "Det.limit_type": "max", "Det.limit_side_len": MAX_SIDE, "Det.box_thresh": 0.4}
    for key in ("intra_op_num_threads", "inter_op_num_threads"):
        params[f"EngineConfig.onnxruntime.{key}"] = 1
    return RapidOCR(params=params)


@dataclass(frozen=True)
class Reading:
    lines: list[TextLine]  # the accepted lines of the first polarity that gave any
    detected: int  # regions the detector found in all the polarities read (accepted or not)


def read_lines(gray: np.ndarray, line_height: int, accept=lambda line: True) -> Reading:
    """Accepted text lines in an 8-bit crop: as it is, and inverted when the detector found regions there but none
    read as text (the recogniser reads dark-on-light best; light overlays can read only once inverted). Where the
    detector finds no region at all the inverse is not read: the detector finds text of either polarity (on the
    bench's 280 text images, 399 crops: the inverse never read a line the crop itself did not)."""
    scale = float(np.clip(TARGET_LINE_PX / max(line_height, 1), MIN_SCALE, 6.0))
    scale = min(scale, MAX_SIDE / max(gray.shape))
    big = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC) if scale != 1 else gray
    big = cv2.copyMakeBorder(big, 16, 16, 16, 16, cv2.BORDER_REPLICATE)
    detected = 0
    for image in (big, 255 - big):
        found = _lines(engine()(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)), scale, gray.shape)
        detected += len(found)
        if lines := [ln for ln in found if accept(ln)]:
            return Reading(lines, detected)
        if not found:
            break
    return Reading([], detected)


def _lines(result, scale: float, shape: tuple[int, int]) -> list[TextLine]:
    if result is None or result.boxes is None or result.txts is None:
        return []
    out = []
    for quad, text, score in zip(result.boxes, result.txts, result.scores):
        q = (np.asarray(quad, np.float64) - 16) / scale
        y0, x0 = max(int(q[:, 1].min()), 0), max(int(q[:, 0].min()), 0)
        y1, x1 = min(int(np.ceil(q[:, 1].max())), shape[0]), min(int(np.ceil(q[:, 0].max())), shape[1])
        if y1 > y0 and x1 > x0:
            out.append(TextLine(y0, x0, y1, x1, str(text), float(score)))
    return out
