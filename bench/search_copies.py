"""More like this on real near-copies: for each CLAHE-enhanced knee (`knee-xray-kl-clahe`, ingested as a second
source with the same path pattern), where its original comes in `ortho search --like COPY` (curation/similar.py).

    ortho sources add clahe ../shared/data/knee-xray-kl-clahe --kind public --labels folder:kl_grade ... (as knees)
    ortho ingest clahe && ortho embed --checkpoint CKPT
    python bench/search_copies.py --workspace workspace --copies clahe --originals knees

Baseline in the same run: the rank a random image would get (half the catalog, on average). Printed: how often the
original is first, in the top 5 and in the top 20, the median rank, and the seconds per search.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from catalog import db  # noqa: E402
from catalog.workspace import Workspace  # noqa: E402
from curation.similar import more_like, update_index  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workspace", default="workspace")
    ap.add_argument("--copies", default="clahe")
    ap.add_argument("--originals", default="knees")
    ap.add_argument("--k", type=int, default=100)
    args = ap.parse_args()
    ws = Workspace.open(args.workspace)
    pairs = db.query(ws, """SELECT c.image_id, o.image_id FROM images c JOIN images o
                            ON o.patient_key = c.patient_key AND o.laterality = c.laterality
                            WHERE c.source = ? AND o.source = ?""", [args.copies, args.originals])[1]
    _, ids, _ = update_index(ws)
    ranks, t0 = [], time.perf_counter()
    for copy, original in pairs:
        hits = [h.image_id for h in more_like(ws, copy, k=args.k)]
        ranks.append(hits.index(original) + 1 if original in hits else args.k + 1)
    per_search = (time.perf_counter() - t0) / max(len(pairs), 1)
    r = np.array(ranks)
    print(f"{len(pairs)} copies against {len(ids):,} indexed images: original first {int((r == 1).sum())}, "
          f"top 5 {int((r <= 5).sum())}, top 20 {int((r <= 20).sum())}, median rank {int(np.median(r))} "
          f"(>{args.k} counted as {args.k + 1}); a random image's expected rank {len(ids) // 2:,}; "
          f"{per_search * 1000:.0f} ms per search")


if __name__ == "__main__":
    main()
