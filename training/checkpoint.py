"""Training checkpoints: everything a resumed run needs to continue exactly, written atomically."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from catalog.files import atomic_path

CHECKPOINT = "checkpoint.pt"


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_dir: Path, state: dict) -> Path:
    """Write to a hidden temporary file, fsync, then rename: a kill leaves the previous checkpoint whole."""
    path = run_dir / CHECKPOINT
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(state, f)
    return path


def load_checkpoint(run_dir: Path) -> dict | None:
    path = run_dir / CHECKPOINT
    if not path.is_file():
        return None
    # Our own file: it holds RNG states and numpy arrays, so not weights_only.
    return torch.load(path, map_location="cpu", weights_only=False)


def clear_partial(run_dir: Path) -> None:
    # the temporary names catalog.files.atomic_path gives: .checkpoint.pt.TOKEN.tmp
    for tmp in run_dir.glob(f".{CHECKPOINT}.*.tmp"):
        tmp.unlink(missing_ok=True)
