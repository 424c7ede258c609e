"""Near-duplicates that survive re-exports: recall per treatment and strength, false groups, left/right merges, cost.

    python bench/dups.py [--originals val|train|all] [--per 27] [--seed 0] [--strengths all|0]

Originals: the real knee radiographs of ../shared/data/knee-xray-kl (val by default: 826 knees the
matcher was not tuned on; both knees of many patients, laterality from the file name as a path
pattern would give it). Re-exports: `--per` of them per treatment and strength (bench/reexports.py),
each from a randomly chosen original, as a second source with no path pattern (no laterality, no
series). Everything goes through what `ortho curate` runs on stored pixels: signatures, keypoints,
the global search and the crop search (curation/dedup/search.py, curation/dedup/crop_match.py), then the groups.

Counted: a re-export is found when it is in its original's group; a false group holds two different
knees (two originals, or a re-export with another knee's original); a left/right merge is a false
group holding both knees of one patient. Cost: seconds per image for signatures and keypoints, and
for the searches, and candidate pairs per image (global edges and crop-check candidates).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.reexports import STRENGTHS, TREATMENTS, reexport  # noqa: E402
from curation.dedup import crop_match, keypoints  # noqa: E402
from curation.dedup.config import DedupConfig  # noqa: E402
from curation.dedup.groups import METHODS  # noqa: E402
from curation.dedup.search import dup_graph  # noqa: E402
from curation.dedup.signatures import signature  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "knee-xray-kl"


@dataclass
class Corpus:
    images: list[np.ndarray]
    knee: list[str]  # the knee each image shows: the original's file stem (<patient id><L|R>)
    laterality: list[str | None]  # what the catalog would know: the originals' path pattern; re-exports none
    treatment: list[tuple[str, int] | None]  # None for originals


def load_originals(which: str = "val", limit: int | None = None) -> tuple[list[np.ndarray], list[str]]:
    dirs = {"val": ["val"], "train": ["train"], "all": ["train", "val"]}[which]
    files = sorted(f for d in dirs for f in (DATA / d).rglob("*.png"))[:limit]
    return [np.asarray(Image.open(f).convert("L")) for f in files], [f.stem for f in files]


def build_corpus(originals: list[np.ndarray], stems: list[str], per: int, seed: int,
                 strengths: str = "all", treatments: list[str] | None = None) -> Corpus:
    rng = np.random.default_rng(seed)
    c = Corpus(list(originals), list(stems), [s[-1] if s[-1] in "LR" else None for s in stems], [None] * len(stems))
    for name in treatments or list(TREATMENTS):
        for s in range(TREATMENTS[name][1] if strengths == "all" else 1):
            for i in rng.choice(len(originals), size=min(per, len(originals)), replace=False):
                c.images.append(reexport(originals[i], name, s, rng))
                c.knee.append(stems[i])
                c.laterality.append(None)
                c.treatment.append((name, s))
    return c


def curate_groups(c: Corpus, cfg: DedupConfig | None = None) -> tuple[np.ndarray, dict]:
    """The groups `ortho curate` forms over these images, and the cost of each step."""
    cfg = cfg or DedupConfig()
    t0 = time.perf_counter()
    sigs = [signature(a) for a in c.images]
    t1 = time.perf_counter()
    feats = [keypoints.features(a) for a in c.images]
    t2 = time.perf_counter()
    emb = np.stack([s[0] for s in sigs])
    flip = np.stack([s[1] for s in sigs])
    graph = dup_graph(emb, flip, c.laterality, [None] * len(c.images), cfg)
    t3 = time.perf_counter()
    kp = np.concatenate([k for k, _ in feats])
    desc = np.concatenate([d for _, d in feats])
    sizes = np.array([len(k) for k, _ in feats])
    shapes = np.array([a.shape for a in c.images])
    edges, counts = crop_match.crop_edges(kp, desc, sizes, graph.apart_from_crop, lambda i: c.images[i], cfg.crops,
                                     shapes=shapes)
    graph.add_crop_edges(edges)
    t4 = time.perf_counter()
    false = [(e.a, e.b, round(e.similarity, 3), "crop_flip" if e.mirrored else "crop") for e in edges
             if c.knee[e.a] != c.knee[e.b]]
    false += [(i, int(graph.best_other[i]), round(float(graph.best_sim[i]), 3), METHODS[graph.best_method[i]])
              for i in range(len(c.images)) if graph.best_other[i] >= 0 and c.knee[i] != c.knee[graph.best_other[i]]
              and graph.best_method[i] < 2]
    n = len(c.images)
    cost = {"images": n, "signature_ms": 1000 * (t1 - t0) / n, "keypoints_ms": 1000 * (t2 - t1) / n,
            "global_search_s": t3 - t2, "crop_search_s": t4 - t3, "global_pairs_per_image": graph.pairs / n,
            "crop_candidates_per_image": counts["candidates"] / n, "crop": counts,
            "false_pairs": [(c.knee[a], c.treatment[a], c.knee[b], c.treatment[b], sim, m) for a, b, sim, m in false]}
    return graph.group, cost


def score(c: Corpus, group: np.ndarray) -> dict:
    """Recall per (treatment, strength); false groups and left/right merges over all groups."""
    members: dict[int, list[int]] = {}
    for i, g in enumerate(group.tolist()):
        members.setdefault(g, []).append(i)
    original_of = {k: i for i, (k, t) in enumerate(zip(c.knee, c.treatment)) if t is None}
    false_groups, lr_merges, wrong = 0, 0, []
    for idx in members.values():
        knees = {c.knee[i] for i in idx}
        if len(knees) > 1:
            false_groups += 1
            patients = [k[:-1] for k in knees]
            lr_merges += len(patients) != len(set(patients))
            wrong += [i for i in idx if c.treatment[i] is not None]
    found: dict[tuple[str, int], list[int]] = {}
    for i, t in enumerate(c.treatment):
        if t is not None:
            ok = group[i] == group[original_of[c.knee[i]]] and len({c.knee[j] for j in members[int(group[i])]}) == 1
            found.setdefault(t, []).append(int(ok))
    return {"recall": {t: (sum(v), len(v)) for t, v in found.items()}, "false_groups": false_groups,
            "left_right_merges": lr_merges, "reexports_in_false_groups": len(wrong)}


def print_table(result: dict, cost: dict, goal: float = 0.95) -> None:
    print(f"{'treatment':<22} {'strength':<20} {'found':>9} {'recall':>7}")
    for (name, s), (k, n) in sorted(result["recall"].items(), key=lambda kv: (list(TREATMENTS).index(kv[0][0]), kv[0][1])):
        mark = "" if k / n >= goal else "  < goal"
        print(f"{name:<22} {STRENGTHS[name][s]:<20} {k:>4} of {n:<3} {k / n:>6.2f}{mark}")
    print(f"false groups {result['false_groups']}, left/right merges {result['left_right_merges']}, "
          f"re-exports in false groups {result['reexports_in_false_groups']}")
    for pair in cost["false_pairs"]:
        print("   false pair:", pair)
    print(f"cost over {cost['images']} images: signature {cost['signature_ms']:.1f} ms + keypoints "
          f"{cost['keypoints_ms']:.1f} ms per image (one core); global search {cost['global_search_s']:.2f} s, "
          f"crop search {cost['crop_search_s']:.2f} s; {cost['global_pairs_per_image']:.3f} global pairs and "
          f"{cost['crop_candidates_per_image']:.3f} crop candidates per image")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--originals", default="val", choices=["val", "train", "all"])
    ap.add_argument("--per", type=int, default=27)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--strengths", default="all", choices=["all", "0"])
    ap.add_argument("--treatments", default="", help="comma-separated subset (default: all)")
    ap.add_argument("--out", type=Path, help="write the figures as JSON")
    args = ap.parse_args()
    if not DATA.exists():
        print(f"skipped: needs {DATA}")
        return
    originals, stems = load_originals(args.originals)
    chosen = [t for t in args.treatments.split(",") if t] or None
    corpus = build_corpus(originals, stems, args.per, args.seed, args.strengths, chosen)
    print(f"{len(originals)} originals ({args.originals}) + {len(corpus.images) - len(originals)} re-exports")
    group, cost = curate_groups(corpus)
    result = score(corpus, group)
    print_table(result, cost)
    if args.out:
        args.out.write_text(json.dumps({"recall": {f"{t}|{s}": v for (t, s), v in result["recall"].items()},
                                        **{k: v for k, v in result.items() if k != "recall"}, "cost": cost}, indent=1))


if __name__ == "__main__":
    main()
