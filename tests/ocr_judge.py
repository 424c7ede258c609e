"""What a person could still read, for the tests and bench/burned_text.py (the ingest path never
uses it): an independent OCR (Tesseract, a Debian package) and, as a second reader, RapidOCR's
detector over the whole image (screening only ever runs it on candidate regions)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from functools import lru_cache

import cv2
import numpy as np

from ingest.text.candidates import to_uint8

UPSCALE_TO = 1600


def available() -> bool:
    return shutil.which("tesseract") is not None


def _views(pixels: np.ndarray) -> list[np.ndarray]:
    """The image at a robust window, enlarged so small text has pixels enough, in both polarities."""
    gray = to_uint8(pixels)
    factor = UPSCALE_TO / max(gray.shape)
    big = cv2.resize(gray, None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC if factor > 1 else cv2.INTER_AREA)
    return [big, 255 - big]


def read_text(pixels: np.ndarray) -> str:
    """Everything Tesseract reads (sparse-text mode: overlays are scattered words)."""
    texts = []
    for image in _views(pixels):
        ok, png = cv2.imencode(".png", image)
        # one thread: Tesseract's OpenMP threads spin against each other on a busy machine (a read took > 120 s)
        done = subprocess.run(["tesseract", "stdin", "stdout", "--psm", "11"], input=png.tobytes(),
                              capture_output=True, timeout=600, env={**os.environ, "OMP_THREAD_LIMIT": "1"})
        texts.append(done.stdout.decode("utf-8", "replace"))
    return "\n".join(texts)


@lru_cache(maxsize=1)
def _whole_image_engine():
    from rapidocr import RapidOCR

    # one thread, as ingest/text/ocr.py's engine: the same readings (checked token for token and score for score),
    # without onnxruntime's spinning threads fighting the other test worker for the two cores (a third less CPU)
    threads = {f"EngineConfig.onnxruntime.{key}": 1 for key in ("intra_op_num_threads", "inter_op_num_threads")}
    return RapidOCR(params={"Global.log_level": "critical", "Global.use_cls": False,
                            "Det.limit_type": "max", "Det.limit_side_len": UPSCALE_TO, **threads})


def read_text_rapidocr(pixels: np.ndarray) -> str:
    texts = []
    for image in _views(pixels):
        result = _whole_image_engine()(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR))
        texts += list(result.txts or ())
    return "\n".join(texts)


def normalise(text: str) -> str:
    return re.sub(r"[^A-Z0-9]", "", text.upper())


def readable(token: str, text: str) -> bool:
    """The token is in the text, allowing one wrong, extra or missing character for tokens of six or more."""
    token, flat = normalise(token), normalise(text)
    if token in flat:
        return True
    if len(token) < 6:
        return False
    return any(_within_one_edit(token, flat[i:i + n]) for n in (len(token) - 1, len(token), len(token) + 1)
               for i in range(len(flat) - n + 1))


def _within_one_edit(a: str, b: str) -> bool:
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b)) <= 1
    short, long_ = sorted((a, b), key=len)
    return any(long_[:i] + long_[i + 1:] == short for i in range(len(long_)))
