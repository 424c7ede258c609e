"""A labelled image tree with a known answer: three classes drawn as a bright bar at three heights,
40 patients (two knees each) in declared train/val/test folders."""

from pathlib import Path

import numpy as np
from PIL import Image

N_PATIENTS = {"train": 24, "val": 8, "test": 8}


def draw(label: int, rng) -> np.ndarray:
    img = rng.normal(90, 12, (96, 96)).clip(0, 255)
    row = 16 + 28 * label
    img[row:row + 12, 10:86] += 120
    return img.clip(0, 255).astype(np.uint8)


def write_bars(root: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    pid = 70000
    for split, n in N_PATIENTS.items():
        for _ in range(n):
            pid += 1
            for side in "LR":
                label = int(rng.integers(0, 3))
                path = root / split / str(label) / f"{pid}{side}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(draw(label, rng)).save(path)
    return root
