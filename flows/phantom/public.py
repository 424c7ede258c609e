"""The public-dataset-like copy of each knee, as a PNG under public/<split>/<KL>/: the same pixels as
the pacs radiograph (a cross-source duplicate), a re-windowed or a cropped 8-bit re-release of it
(near-duplicates), or a public-only knee, 8-bit as public datasets often are."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from flows.phantom.burned_text import burn_film_label, has_burned_text
from flows.phantom.patients import PhantomPatient
from flows.phantom.radiographs import draw_radiograph


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def rewindowed(arr: np.ndarray) -> np.ndarray:
    """12-bit knee -> 8 bits through a gamma of 0.6: what a re-release that enhances contrast does."""
    return (np.power(arr / 4095.0, 0.6) * 255).astype(np.uint8)


def cropped_reexport(arr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """12-bit knee -> 8 bits, 90-95% of each side kept at a random offset, resized back to the
    original size: what a re-release that trims borders does."""
    h, w = arr.shape
    f = rng.uniform(0.90, 0.95)
    ch, cw = round(h * f), round(w * f)
    y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    part = Image.fromarray(arr[y0 : y0 + ch, x0 : x0 + cw].astype(np.float32), mode="F").resize((w, h), Image.BICUBIC)
    return (np.clip(np.asarray(part), 0, 4095) / 16).astype(np.uint8)


def public_knee(p: PhantomPatient, side: str, grade: int, arr: np.ndarray, rng: np.random.Generator, seed: int,
                poses: bool) -> np.ndarray:
    """The public copy of patient p's `side` knee, whose pacs pixels are arr. Only the public-only knees
    draw from rng (one knee each, so the draws that follow stay put)."""
    if p.index % 2 == 0:  # a public copy of the same pixels (cross-source duplicate)
        return arr
    if p.index == 1:  # a re-windowed 8-bit re-release of the same knee (near-duplicate)
        return rewindowed(arr)
    # public-only knees, 8-bit as public datasets often are
    other = draw_radiograph(grade, side, rng, pose=np.random.default_rng([seed, p.index, 3, side == "L"])
                            if poses else None)
    out = (other >> 4).astype(np.uint8)
    if p.index == 3:  # instead (drawn all the same, so later patients keep their pixels): a
        # cropped and resized 8-bit re-release of the pacs knee (near-duplicate)
        return cropped_reexport(arr, np.random.default_rng([seed, p.index, 4, side == "L"]))
    if has_burned_text(p) and side == "L":  # a digitised film: the ID on a light label
        return burn_film_label(out, p)
    return out
