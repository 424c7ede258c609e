"""What a person could still read: an independent OCR (Tesseract, a Debian package) over whole
images, for the tests and bench/burned_text.py. The ingest path never uses it."""

from __future__ import annotations

import re
import shutil
import subprocess

import cv2
import numpy as np

from ingest.text.candidates import to_uint8


def available() -> bool:
    return shutil.which("tesseract") is not None


def read_text(pixels: np.ndarray, upscale_to: int = 1600) -> str:
    """Everything Tesseract reads in the image, at a robust window, in both polarities, enlarged so
    small text has enough pixels (sparse-text mode: overlays are scattered words)."""
    gray = to_uint8(pixels)
    factor = max(1.0, upscale_to / max(gray.shape))
    big = cv2.resize(gray, None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC)
    texts = []
    for image in (big, 255 - big):
        ok, png = cv2.imencode(".png", image)
        done = subprocess.run(["tesseract", "stdin", "stdout", "--psm", "11"], input=png.tobytes(),
                              capture_output=True, timeout=120)
        texts.append(done.stdout.decode("utf-8", "replace"))
    return "\n".join(texts)


def normalise(text: str) -> str:
    return re.sub(r"[^A-Z0-9]", "", text.upper())


def readable(token: str, text: str) -> bool:
    """The token is in the text, allowing one wrong character for tokens of six or more."""
    token, flat = normalise(token), normalise(text)
    if token in flat:
        return True
    if len(token) < 6:
        return False
    n = len(token)
    return any(sum(a != b for a, b in zip(token, flat[i:i + n])) <= 1 for i in range(len(flat) - n + 1))
