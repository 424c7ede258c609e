"""Drawing primitives shared by the radiographs and the MRI volumes."""

from __future__ import annotations

import numpy as np
from PIL import Image


def soft(d: np.ndarray, width: float = 1.5) -> np.ndarray:
    """A soft inside-outside mask from a signed distance: 1 well inside (d < 0), 0 well outside."""
    return 0.5 * (1 - np.tanh(d / width))


def bone_texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """Trabecular texture: half-resolution noise, bicubically upsampled to size x size. Each bone's own,
    as in real bone (and what near-duplicate search keys on)."""
    field = rng.normal(0, 1, (size // 2, size // 2)).astype(np.float32)
    return np.asarray(Image.fromarray(field, mode="F").resize((size, size), Image.BICUBIC))
