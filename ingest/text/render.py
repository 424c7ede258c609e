"""Text burned into pixels the way scanners, consoles and film digitisers draw it: for the phantom,
the tests and bench/burned_text.py (nothing in the ingest path draws text).

Fonts are the DejaVu and STIX faces matplotlib ships, so every machine that installs the project has
them. Drawing happens at the image's own depth: 16-bit images get 16-bit text values.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

_FONT_DIR = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
FONTS = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSansMono.ttf", "DejaVuSerif.ttf", "STIXGeneral.ttf",
         "DejaVuSansMono-Bold.ttf")
CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right", "top", "bottom", "left", "right")


@dataclass(frozen=True)
class TextStyle:
    font: str = "DejaVuSans.ttf"
    height: float = 0.03  # cap height as a share of the image height
    polarity: str = "light"  # light text (the usual overlay) or dark
    frame: str = "none"  # none | box (a filled backing box) | outline (a dark or light halo)
    corner: str = "top-left"
    value: float = 1.0  # text intensity as a share of the image's range (light) or from its bottom (dark)
    levels: float | None = None  # faint text: this many levels above (light) or below (dark) what it is drawn on


def font(name: str, px: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(_FONT_DIR / name), max(px, 6))


def burn(pixels: np.ndarray, lines: list[str], style: TextStyle) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Draw `lines` into a copy of `pixels`; returns the copy and the text's box (y0, x0, y1, x1)."""
    h, w = pixels.shape
    f = font(style.font, int(round(style.height * h / 0.72)))  # cap height is ~0.72 of the em
    layer = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(layer)
    spacing = int(f.size * 0.25)
    bbox = draw.multiline_textbbox((0, 0), "\n".join(lines), font=f, spacing=spacing)
    tw, th = bbox[2] - bbox[0], bbox[3] - bbox[1]
    x, y = _place(style.corner, w, h, tw, th, margin=max(2, int(0.02 * min(w, h))))
    origin = (x - bbox[0], y - bbox[1])
    halo = 0 if style.frame == "none" else max(1, f.size // 10)
    text = "\n".join(lines)
    draw.multiline_text(origin, text, font=f, fill=255, spacing=spacing)
    ink_alpha = np.asarray(layer, np.float64) / 255
    if halo:
        ring = Image.new("L", (w, h), 0)
        ImageDraw.Draw(ring).multiline_text(origin, text, font=f, fill=255, spacing=spacing,
                                            stroke_width=halo, stroke_fill=255)
        halo_alpha = np.asarray(ring, np.float64) / 255
    top = float(np.iinfo(pixels.dtype).max) if pixels.dtype.kind == "u" else float(pixels.max())
    lo, hi = float(pixels.min()), float(max(pixels.max(), 1))
    ink = hi * style.value if style.polarity == "light" else lo + (hi - lo) * (1 - style.value)
    if style.levels is not None:
        under = float(np.median(pixels[y:y + th, x:x + tw]))
        ink = under + style.levels if style.polarity == "light" else under - style.levels
    back = lo if style.polarity == "light" else hi
    out = pixels.astype(np.float64)
    if style.frame == "box":
        pad = max(2, f.size // 5)
        out[max(y - pad, 0):y + th + pad, max(x - pad, 0):x + tw + pad] = back
    if halo:  # an outline: the text's contrast colour around every stroke
        out = out * (1 - halo_alpha) + back * halo_alpha
    out = out * (1 - ink_alpha) + ink * ink_alpha
    box = (max(y - halo - 2, 0), max(x - halo - 2, 0), min(y + th + halo + 2, h), min(x + tw + halo + 2, w))
    return np.clip(out, 0, top).astype(pixels.dtype), box


def _place(corner: str, w: int, h: int, tw: int, th: int, margin: int) -> tuple[int, int]:
    left, right = margin, max(w - tw - margin, 0)
    top, bottom = margin, max(h - th - margin, 0)
    mid_x, mid_y = max((w - tw) // 2, 0), max((h - th) // 2, 0)
    return {"top-left": (left, top), "top-right": (right, top), "bottom-left": (left, bottom),
            "bottom-right": (right, bottom), "top": (mid_x, top), "bottom": (mid_x, bottom),
            "left": (left, mid_y), "right": (right, mid_y)}[corner]


def burn_turned(pixels: np.ndarray, lines: list[str], style: TextStyle, quarters: int = 1
                ) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Text turned `quarters` x 90 degrees counter-clockwise (1: reads bottom to top, along an edge; 3: top to
    bottom); `style.corner` is where it sits on the turned image. Returns the image and the text's box."""
    turned = np.rot90(pixels, -quarters)
    shown, (y0, x0, y1, x1) = burn(np.ascontiguousarray(turned), lines, style)
    h, w = turned.shape
    corners = [(y0, x0), (y1, x1)]
    for _ in range(quarters % 4):  # a point of a clockwise-turned image, turned back counter-clockwise
        corners = [(w - x, y) for y, x in corners]
        h, w = w, h
    (a, b), (c, d) = corners
    return np.ascontiguousarray(np.rot90(shown, quarters)), (min(a, c), min(b, d), max(a, c), max(b, d))
