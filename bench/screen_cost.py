"""What the burned-in text screen costs on clean images: `screen()` of this checkout against another revision's.

    python bench/screen_cost.py --against b2ead58            # 4 x 24 clinical-size images, 200 real knees: ~2 min

The images are bench/burned_text.py's own clean ones: clinical-size radiographs (real knees enlarged to 2048-3000
px with detector noise, every fourth a phantom knee; `--seeds` draws, each also drawn as the bench's throughput arm
draws it, after its 200 knees) and real 224 px knees. Both versions run in this process, one OpenCV thread each (as
ingest runs them), alternating, best of `--rounds`: CPU time per image, the ratio, and how many images gave a
candidate (read by OCR: the costly part) or were masked. The other revision is checked out in a temporary git
worktree.
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "bench"))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

import burned_text as bt  # noqa: E402

console = Console()


def image_sets(seeds: list[int], per_seed: int, knees: int) -> dict[str, list[np.ndarray]]:
    clinical = []
    for seed in seeds:
        clinical += list(bt.clinical_images(per_seed, np.random.default_rng(seed)))
        as_bench = np.random.default_rng(seed)
        bt.base_images(200, as_bench)  # the throughput arm draws its clinical images after 200 knees
        clinical += list(bt.clinical_images(per_seed, as_bench))
    return {f"clean clinical-size, {len(clinical)}": clinical,
            f"real knees 224 px, {knees}": bt.base_images(knees, np.random.default_rng(3))}


def screen_of(root: Path):
    """`ingest.text.screen.screen` as the checkout at `root` has it (each import of the package afresh)."""
    for name in [m for m in sys.modules if m.split(".")[0] in ("ingest", "catalog")]:
        del sys.modules[name]
    sys.path.insert(0, str(root))
    try:
        module = importlib.import_module("ingest.text.screen")
    finally:
        sys.path.remove(str(root))
    assert Path(module.__file__).is_relative_to(root), module.__file__
    return module.screen


def measure(screens: dict, images: list[np.ndarray], rounds: int) -> dict[str, dict]:
    out = {arm: {"cpu": [], "candidates": 0, "masked": 0} for arm in screens}
    for r in range(rounds):
        for arm, screen in screens.items():
            t = time.process_time()
            results = [screen(px) for px in images]
            out[arm]["cpu"].append((time.process_time() - t) / len(images) * 1000)
            if r == 0:
                out[arm]["candidates"] = sum(res.candidates > 0 for res in results)
                out[arm]["masked"] = sum(res.cleaned for res in results)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--against", required=True, help="the revision to compare with (a commit, tag or branch)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--clinical", type=int, default=24, help="clinical-size images per draw")
    ap.add_argument("--knees", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    sets = image_sets(args.seeds, args.clinical, args.knees)
    with tempfile.TemporaryDirectory() as tmp:
        other = Path(tmp) / "other"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(other), args.against],
                       check=True, capture_output=True)
        try:
            screens = {args.against: screen_of(other), "this checkout": screen_of(ROOT)}
            for screen in screens.values():  # the OCR engine loads once, outside the timing
                screen(next(iter(sets.values()))[0])
            table = Table("images", "version", "screen() CPU ms/image (best)", "ratio", "with a candidate", "masked",
                          title="the text screen on clean images, one thread")
            for label, images in sets.items():
                got = measure(screens, images, args.rounds)
                base = min(got[args.against]["cpu"])
                for arm, g in got.items():
                    table.add_row(label, arm, f"{min(g['cpu']):.1f}", f"{min(g['cpu']) / base:.2f}",
                                  str(g["candidates"]), str(g["masked"]))
            console.print(table)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(other)], capture_output=True)


if __name__ == "__main__":
    main()
