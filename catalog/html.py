"""Self-contained HTML pages (the evaluation and curation reports): images inlined as PNG data URIs, no
external resource, thumbnails of stored images windowed to 8 bits and written with pixel chunks only."""

from __future__ import annotations

import base64
import html

import numpy as np
from PIL import Image

from catalog.pixels import encode_png, robust_range

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;
     color:#1d2330;line-height:1.45;padding:0 1rem}
h1{font-size:1.5rem;margin-bottom:.2rem} h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #dde}
table{border-collapse:collapse;margin:.6rem 0;font-size:.88rem} th,td{padding:.25rem .6rem;text-align:left}
th{background:#f1f3f8} tr:nth-child(even) td{background:#fafbfd} td.num{font-variant-numeric:tabular-nums}
.meta{color:#4a5263;font-size:.9rem} img{max-width:100%;margin:.4rem 0}
code{background:#f1f3f8;padding:0 .25rem;border-radius:3px}
"""


def esc(value) -> str:
    return html.escape(str(value))


def img_tag(png: bytes | None, alt: str, **attrs) -> str:
    """An <img> with the PNG inlined as a data URI ("" for no image)."""
    if not png:
        return ""
    extra = "".join(f' {k.replace("_", "-")}="{esc(v)}"' for k, v in attrs.items())
    return f'<img alt="{esc(alt)}"{extra} src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def document(title: str, body: list[str], css: str = "", script: str = "") -> str:
    """A whole page: the shared style (+ `css`), the body's parts, an inline script at the end."""
    return ("<!doctype html><html lang=en><head><meta charset=utf-8>"
            f"<title>{esc(title)}</title><style>{CSS}{css}</style></head><body>"
            + "\n".join(body) + (f"<script>{script}</script>" if script else "") + "</body></html>")


def display_u8(pixels: np.ndarray) -> np.ndarray:
    """A stored image (any depth) as 8 bits through the robust window (catalog.pixels.robust_range)."""
    lo, hi = robust_range(pixels)
    return np.clip((pixels.astype(np.float32) - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.uint8)


def reduce_u8(u8: np.ndarray, side: int) -> np.ndarray:
    """An 8-bit image reduced (area average, never enlarged) to `side` pixels on its longer side."""
    h, w = u8.shape
    scale = min(1.0, side / max(h, w))
    if scale == 1.0:
        return u8
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(u8).resize(size, Image.BOX))


def thumbnail_png(pixels: np.ndarray, side: int = 128) -> bytes:
    """A stored image as an 8-bit greyscale PNG thumbnail (IHDR, IDAT, IEND only)."""
    return encode_png(reduce_u8(display_u8(pixels), side), compress_level=3)
