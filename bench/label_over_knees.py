"""One label style burned into many real knees: how often the screen's detector misses it, and what stays readable.

The full bench (bench/burned_text.py) draws a random style per image, so a weak style shows on a few images of one
seed at most. This holds the style still and varies the anatomy under it: by default a light two-line label at the
top left of the 224 px knees in ../shared/data/knee-xray-kl (the style seed 2 of the full bench found leaking).

    python bench/label_over_knees.py --knees 300            # candidates only (seconds)
    python bench/label_over_knees.py --knees 40 --read      # and tokens readable before / after, both readers
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from rich.console import Console

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ingest.text.oriented import candidate_sets  # noqa: E402
from ingest.text.render import FONTS, TextStyle, burn  # noqa: E402
from ingest.text.screen import screen  # noqa: E402

LINES = ["QUIMARWEN^TORVEL", "ID XP8614767  2003-05-07"]
TOKENS = ["QUIMARWEN", "TORVEL", "XP8614767", "20030507"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--knees", type=int, default=300)
    ap.add_argument("--height", type=float, default=0.04, help="cap height, a share of the image height")
    ap.add_argument("--polarity", choices=("light", "dark"), default="light")
    ap.add_argument("--frame", choices=("none", "box", "outline"), default="none")
    ap.add_argument("--corner", default="top-left")
    ap.add_argument("--font", choices=FONTS, default="DejaVuSans.ttf")
    ap.add_argument("--read", action="store_true", help="also read every image before and after the screen (slow)")
    args = ap.parse_args()
    console = Console()
    data = ROOT.parent / "shared" / "data" / "knee-xray-kl"
    if not data.is_dir():
        sys.exit(f"bench/label_over_knees.py needs the real knees at {data}")
    style = TextStyle(font=args.font, height=args.height, polarity=args.polarity, frame=args.frame, corner=args.corner)
    if args.read:
        from tests import ocr_judge as judge

        if not judge.available():
            sys.exit("--read needs Tesseract as the independent reader: apt-get install tesseract-ocr")
        from bench.burned_text import read_both
    files = sorted(data.rglob("*.png"))[:args.knees]
    missed, before, after, leaking = [], 0, 0, []
    for i, path in enumerate(files):
        shown, (y0, x0, y1, x1) = burn(np.asarray(Image.open(path)), LINES, style)
        if not any(b.y0 < y1 and b.y1 > y0 and b.x0 < x1 and b.x1 > x0 for s in candidate_sets(shown) for b in s.boxes):
            missed.append(i)
        if args.read:
            text = read_both(shown)
            readable = [t for t in TOKENS if any(judge.readable(t, r) for r in text)]
            text = read_both(screen(shown).pixels)
            left = [t for t in readable if any(judge.readable(t, r) for r in text)]
            before, after = before + len(readable), after + len(left)
            if left:
                leaking.append(i)
    console.print(f"{style}: no candidate on the label in {len(missed)} of {len(files)} knees {missed[:20]}")
    if args.read:
        console.print(f"tokens readable before the screen {before}, after {after} (goal 0); leaking knees {leaking}")


if __name__ == "__main__":
    main()
