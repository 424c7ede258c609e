"""Plots as PNG bytes that carry pixels only (training's loss curves, evaluation's report)."""

from __future__ import annotations


def figure_png(fig, dpi: int = 110) -> bytes:
    """A matplotlib figure as PNG bytes with pixel chunks only: no text chunks (matplotlib writes its
    version, and a caller's metadata could carry anything), as for the store's images."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    buf.seek(0)
    out = io.BytesIO()
    Image.open(buf).convert("RGB").save(out, format="PNG", optimize=True)
    return out.getvalue()
