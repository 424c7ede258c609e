"""Re-exports of real radiographs, as film scanners, PACS viewers and public releases make them.

Each treatment is a function (image, strength, rng) -> image, over 8- or 16-bit grayscale arrays;
strength 0 is the ordinary case (the range a new user's export shows), higher strengths push it
until the matcher starts to fail (bench/dups.py finds where). Used by bench/dups.py and by the
real-data test in tests/curation/test_reexports.py.
"""

from __future__ import annotations

import io
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def _resize(a: np.ndarray, w: int, h: int, resample=Image.BICUBIC) -> np.ndarray:
    if a.dtype == np.uint8:
        return np.asarray(Image.fromarray(a).resize((w, h), resample))
    out = np.asarray(Image.fromarray(a.astype(np.float32), mode="F").resize((w, h), resample))
    return np.clip(np.round(out), 0, np.iinfo(a.dtype).max).astype(a.dtype)


def _crop_fraction(a: np.ndarray, lo: float, hi: float, rng: np.random.Generator, resize_back: bool) -> np.ndarray:
    h, w = a.shape
    f = rng.uniform(lo, hi)
    ch, cw = round(h * f), round(w * f)
    y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    c = a[y0 : y0 + ch, x0 : x0 + cw]
    return _resize(c, w, h) if resize_back else c


def jpeg(a: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=(40, 25, 12)[s])
    return np.asarray(Image.open(buf))


def gamma(a: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    g = (0.6, 0.45, 0.3)[s]
    g = g if rng.random() < 0.5 else 1 / g
    return np.round(255 * (a / 255.0) ** g).astype(np.uint8)


def equalised(a: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    import cv2

    if s == 0:
        return cv2.equalizeHist(a)
    return cv2.createCLAHE(clipLimit=(2.0, 6.0)[s - 1] * 2, tileGridSize=(8, 8)).apply(a)


def marker(a: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    """A burned-in side marker and accession-like text on a box, as a viewer's export draws them."""
    img = Image.fromarray(a)
    d = ImageDraw.Draw(img)
    h, w = a.shape
    box = (0.12, 0.2, 0.3)[s]
    bw, bh = round(w * box * 2), round(h * box)
    x0, y0 = (int(rng.integers(0, 2)) * (w - bw)), (int(rng.integers(0, 2)) * (h - bh))
    d.rectangle((x0, y0, x0 + bw, y0 + bh), fill=255)
    d.text((x0 + 3, y0 + 2), "R  ACC 4471902", fill=0, font=ImageFont.load_default())
    return np.asarray(img)


def upscaled_16bit(a: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    f = (2, 3, 4)[s]
    big = np.asarray(Image.fromarray(a.astype(np.float32) * 257.0, mode="F").resize(
        (a.shape[1] * f, a.shape[0] * f), Image.BICUBIC))
    return np.clip(np.round(big), 0, 65535).astype(np.uint16)


def crop(a: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    lo, hi = ((0.85, 0.95), (0.75, 0.85), (0.65, 0.75))[s]
    return _crop_fraction(a, lo, hi, rng, resize_back=bool(rng.integers(0, 2)))


def mirror_crop(a: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    lo, hi = ((0.90, 0.95), (0.80, 0.90), (0.70, 0.80))[s]
    return _crop_fraction(np.ascontiguousarray(a[:, ::-1]), lo, hi, rng, resize_back=bool(rng.integers(0, 2)))


def padded(a: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    """Padding of 8-15% (stronger: 15-25%, 25-40%) of the side on one or two sides, in black or white,
    resized back to the original size (a letterbox or pad-to-square export)."""
    lo, hi = ((0.08, 0.15), (0.15, 0.25), (0.25, 0.40))[s]
    h, w = a.shape
    fill = 0 if rng.random() < 0.7 else 255
    sides = rng.choice(4, size=int(rng.integers(1, 3)), replace=False)
    pad = [0, 0, 0, 0]  # top, bottom, left, right
    for side in sides:
        pad[side] = round((h if side < 2 else w) * rng.uniform(lo, hi))
    out = np.full((h + pad[0] + pad[1], w + pad[2] + pad[3]), fill, a.dtype)
    out[pad[0] : pad[0] + h, pad[2] : pad[2] + w] = a
    return _resize(out, w, h)


def rotated(a: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    """Rotated by 1.5-4 degrees (stronger: 4-7, 7-10, 10-15) either way, corners filled black, same size."""
    import cv2

    lo, hi = ((1.5, 4.0), (4.0, 7.0), (7.0, 10.0), (10.0, 15.0))[s]
    deg = rng.uniform(lo, hi) * rng.choice([-1, 1])
    h, w = a.shape
    m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), deg, 1.0)
    return cv2.warpAffine(a, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def blur_noise(a: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian blur then Gaussian noise: sigma 1 + noise 6 (stronger: 1.5 + 9, 2 + 12), in 8-bit levels."""
    import cv2

    sigma, noise = ((1.0, 6.0), (1.5, 9.0), (2.0, 12.0))[s]
    b = cv2.GaussianBlur(a.astype(np.float32), (0, 0), sigma)
    return np.clip(np.round(b + rng.normal(0, noise, a.shape)), 0, 255).astype(np.uint8)


def combined(a: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    return jpeg(gamma(crop(a, s, rng), s, rng), s, rng)


TREATMENTS: dict[str, tuple[Callable[[np.ndarray, int, np.random.Generator], np.ndarray], int]] = {
    # name: (function, number of strengths); strength 0 is the one the issue measured
    "JPEG q40": (jpeg, 3),
    "gamma": (gamma, 3),
    "equalised": (equalised, 3),
    "burned-in marker": (marker, 3),
    "upscaled 16-bit": (upscaled_16bit, 3),
    "crop": (crop, 3),
    "crop + gamma + JPEG": (combined, 3),
    "mirror + crop 90-95%": (mirror_crop, 3),
    "padded 8-15%": (padded, 3),
    "rotated 1.5-4 deg": (rotated, 4),
    "blur 1 + noise 6": (blur_noise, 3),
}

STRENGTHS = {  # what each strength means, for tables
    "JPEG q40": ["q40", "q25", "q12"],
    "gamma": ["0.6 / 1.67", "0.45 / 2.2", "0.3 / 3.3"],
    "equalised": ["histogram", "CLAHE clip 4", "CLAHE clip 12"],
    "burned-in marker": ["12% box", "20% box", "30% box"],
    "upscaled 16-bit": ["x2", "x3", "x4"],
    "crop": ["85-95%", "75-85%", "65-75%"],
    "crop + gamma + JPEG": ["85-95%, 0.6, q40", "75-85%, 0.45, q25", "65-75%, 0.3, q12"],
    "mirror + crop 90-95%": ["90-95%", "80-90%", "70-80%"],
    "padded 8-15%": ["8-15%", "15-25%", "25-40%"],
    "rotated 1.5-4 deg": ["1.5-4", "4-7", "7-10", "10-15"],
    "blur 1 + noise 6": ["1 + 6", "1.5 + 9", "2 + 12"],
}


def reexport(a: np.ndarray, treatment: str, strength: int, rng: np.random.Generator) -> np.ndarray:
    fn, n = TREATMENTS[treatment]
    if not 0 <= strength < n:
        raise ValueError(f"{treatment!r} has strengths 0..{n - 1}")
    return fn(np.ascontiguousarray(a), strength, rng)
