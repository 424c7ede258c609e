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


def bar_tensors(n: int = 150, seed: int = 0, size: int = 32):
    """(images [n, 1, size, size] normalised, TaskData): n bars of random class, one patient each."""
    import torch

    from evaluation.data import TaskData

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    imgs = np.stack([draw(int(c), rng) for c in labels]).astype(np.float32) / 255.0
    x = torch.nn.functional.interpolate(torch.from_numpy(imgs)[:, None], size=(size, size), mode="area")
    data = TaskData("bars", "multiclass", ("0", "1", "2"), [f"i{k}" for k in range(n)],
                    np.array([f"p{k}" for k in range(n)]), np.array(["train"] * n), labels.astype(np.int64),
                    np.array([f"p{k}" for k in range(n)]), np.array(["DX"] * n), np.array(["knee"] * n))
    return (x - 0.4) / 0.2, data
