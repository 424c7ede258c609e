"""Curation at scale, on synthetic catalogs made here.

    python bench/curate.py --sizes 100000,300000,1200000           # the global search alone (below)
    python bench/curate.py --incremental --sizes 100000,300000      # a nightly curation (issue 16)
    python bench/curate.py --incremental --sizes 100000 --compare-full --out bench/out/curate-incremental.json

1. The global near-duplicate search (default). Synthetic signatures: unit vectors in the embedding space
   (256-d float16), 1% of them planted near-duplicates (a base vector plus noise, cosine ~0.8). Measures
   curation/dedup/search.NeighbourSearch (one IVF index, range-searched with plain and mirrored queries, as a full
   `ortho curate` does), prints seconds, the growth exponent between sizes and the recall of planted pairs.

2. `--incremental`: a curation after adding --new (1,000) images to a curated catalog. Per size N, a workspace:
   the catalog parts of N - --real synthetic images (bench/catalog.py: 64 parts, four sources, the project's
   schema), their signature and keypoint files as curation writes them (512 images a file; embeddings random unit
   vectors with 1% planted pairs, 24 keypoints an image with descriptors drawn around real knee descriptors so
   that none matches another; in the store, hard links to one flat PNG), plus --real real knee radiographs
   (../shared/data/knee-xray-kl) ingested for real. Then, each as `curation.run.curate` in a child process
   under GNU time (wall seconds, peak RSS): the first, full curation; the ingest of --new images (real knees
   not yet in the catalog: 10% crops and 10% CLAHE copies of the real base knees, the rest distinct); the
   curation after it (incremental: the new images queried against the saved searches), its steps' seconds;
   with --compare-full, a full curation of the grown catalog, and whether its groups are the incremental's.
   Printed: the seconds and memory per size, growth exponents, and the planted pairs found.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curation.dedup.config import DedupConfig  # noqa: E402
from curation.dedup.search import NeighbourSearch  # noqa: E402
from curation.dedup.signatures import DIM, SIGNATURE_VERSION  # noqa: E402

KNEES = ROOT.parent / "shared" / "data" / "knee-xray-kl"
TIME = "/usr/bin/time"  # GNU time: a child's peak RSS
GOAL_S, GOAL_AT = 120.0, 1_200_000


def synthetic(n: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    emb = rng.standard_normal((n, DIM), dtype=np.float32)
    planted = n // 100
    base = emb[:planted].copy()
    emb[n - planted :] = base + 0.5 * rng.standard_normal((planted, DIM), dtype=np.float32) / 1.0
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return emb.astype(np.float16), planted


def search_scaling(sizes: list[int]) -> None:
    cfg = DedupConfig()
    print(f"{'images':>9} {'seconds':>8} {'pairs found':>12} {'recall':>7} {'growth':>7}")
    prev = None
    for n in sizes:
        emb, planted = synthetic(n, np.random.default_rng(n))
        flip = emb[:, ::-1].copy()  # a stand-in for mirrored embeddings: same cost
        t = time.perf_counter()
        index = NeighbourSearch(emb, cfg)
        pairs = index.range(emb, cfg.threshold)
        index.range(flip, cfg.threshold)
        secs = time.perf_counter() - t
        found = {(i, j) for i, j, _ in pairs}
        recall = sum((i, n - planted + i) in found for i in range(planted)) / planted
        growth = f"{math.log(secs / prev[1]) / math.log(n / prev[0]):.2f}" if prev else ""
        print(f"{n:>9,} {secs:>8.1f} {len(pairs):>12,} {recall:>7.3f} {growth:>7}", flush=True)
        prev = (n, secs)


# ------------------------------------------------------------------------------------------------------------
# 2. incremental curation


def descriptor_pool(rng: np.random.Generator) -> np.ndarray:
    """Real RootSIFT descriptors of 400 knees (val), or random RootSIFT-like vectors without the data."""
    from PIL import Image

    from curation.dedup import keypoints

    files = sorted((KNEES / "val").rglob("*.png"))[:400]
    if files:
        return np.concatenate([keypoints.features(np.asarray(Image.open(f).convert("L")))[1] for f in files])
    return np.round(255 * np.sqrt(rng.dirichlet(np.ones(keypoints.DESC) * 0.3, 10_000))).astype(np.uint8)


def placeholder_pixels(ws, ids) -> None:
    """Every synthetic image in the store as a hard link to a flat PNG: a spurious candidate pair (random keypoints
    that happen to agree) reaching the crop search's pixel check reads an image, which never matches."""
    from catalog.pixels import encode_png

    png = encode_png(np.full((64, 64), 1000, np.uint16))
    for d in {i[:2] for i in ids}:  # one file per folder: a file takes some 65,000 links at most
        (ws.store_dir / d).mkdir(parents=True, exist_ok=True)
        (ws.staging_dir / f"flat-{d}.png").write_bytes(png)
    for i in ids:
        os.link(ws.staging_dir / f"flat-{i[:2]}.png", ws.store_dir / i[:2] / f"{i}.png")
    for flat in ws.staging_dir.glob("flat-*.png"):
        flat.unlink()


def _fixed(values: np.ndarray):
    """Rows of a 2-d uint8 array as an Arrow binary column (no Python object per row)."""
    import pyarrow as pa

    n, width = values.shape
    offsets = np.arange(n + 1, dtype=np.int32) * width
    return pa.BinaryArray.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets),
                                                        pa.py_buffer(np.ascontiguousarray(values).tobytes())])


def write_features(ws, pool: np.ndarray, rng: np.random.Generator, batch: int = 512) -> list[tuple[str, str]]:
    """Signature and keypoint files for every image of the synthetic catalog, as curation writes them: 512 images a
    file in image id order. Embeddings: random unit vectors, 1% of the images in planted near-duplicate pairs
    (cosine ~0.8); mirrored embeddings random too. Keypoints: 24 an image, inside the image, descriptors of the
    pool plus noise (cosine ~0.75 to it: none matches another)."""
    import duckdb
    import pyarrow as pa
    import pyarrow.parquet as pq

    from catalog.schema import KEYPOINTS, SIGNATURE
    from curation.dedup import keypoints

    images = duckdb.sql(f"""SELECT DISTINCT image_id, rows, cols
                            FROM read_parquet('{ws.parts_dir}/*/occurrences.parquet') ORDER BY image_id""").arrow()
    images = images.read_all() if hasattr(images, "read_all") else images
    n = images.num_rows
    ids = images.column("image_id")
    shape = np.stack([images.column("rows").to_numpy(), images.column("cols").to_numpy()], 1).astype(np.float32)
    emb = np.empty((n, DIM), np.float16)
    for s in range(0, n, 65536):
        x = rng.standard_normal((min(65536, n - s), DIM), dtype=np.float32)
        emb[s : s + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    pairs = rng.choice(n, size=2 * (n // 200), replace=False).reshape(-1, 2)
    x = emb[pairs[:, 0]].astype(np.float32) + 0.75 * rng.standard_normal((len(pairs), DIM), dtype=np.float32) / 16
    emb[pairs[:, 1]] = x / np.linalg.norm(x, axis=1, keepdims=True)
    k = keypoints.KEYPOINTS
    for i, s in enumerate(range(0, n, batch)):
        m = min(batch, n - s)
        flip = rng.standard_normal((m, DIM), dtype=np.float32)
        flip /= np.linalg.norm(flip, axis=1, keepdims=True)
        stats = {name: np.full(m, v, np.float32) for name, v in (
            ("mean", 0.4), ("std", 0.2), ("min", 0.0), ("max", 1.0), ("p01", 0.01), ("p99", 0.98),
            ("frac_at_min", 0.01), ("frac_at_max", 0.0), ("frac_at_full", 0.0))}
        d = pool[rng.integers(0, len(pool), m * k)].astype(np.float32) / 255
        d = np.abs(d + rng.normal(0, 0.06, d.shape).astype(np.float32))
        desc = np.round(255 * d / np.linalg.norm(d, axis=1, keepdims=True)).astype(np.uint8)
        kp = np.empty((m * k, 4), np.float32)
        kp[:, 0] = rng.random(m * k) * np.repeat(shape[s : s + m, 1], k)
        kp[:, 1] = rng.random(m * k) * np.repeat(shape[s : s + m, 0], k)
        kp[:, 2] = rng.uniform(2, 20, m * k)
        kp[:, 3] = rng.uniform(0, 360, m * k)
        name = f"20250302T000000000000-sig0aa-{i:06d}.parquet"
        sig = pa.table({"image_id": ids.slice(s, m), "emb": _fixed(emb[s : s + m].view(np.uint8)),
                        "emb_flip": _fixed(flip.astype(np.float16).view(np.uint8)),
                        **{c: pa.array(v) for c, v in stats.items()}}, schema=SIGNATURE)
        kps = pa.table({"image_id": ids.slice(s, m), "n": pa.array(np.full(m, k, np.int16)),
                        "kp": _fixed(kp.view(np.uint8).reshape(m, -1)), "desc": _fixed(desc.reshape(m, -1))},
                       schema=KEYPOINTS)
        pq.write_table(sig, ws.signatures_dir / name, compression="zstd")
        pq.write_table(kps, ws.keypoints_dir / name, compression="zstd")
    # the versions, as curation records them: files of another version would be retired and computed again
    (ws.keypoints_dir / "VERSION").write_text(f"{keypoints.FEATURES_VERSION}\n")
    (ws.signatures_dir / "VERSION").write_text(f"{SIGNATURE_VERSION}\n")
    placeholder_pixels(ws, ids.to_pylist())
    return [(ids[int(a)].as_py(), ids[int(b)].as_py()) for a, b in pairs]


def knee_files() -> list[Path]:
    return sorted(KNEES.rglob("*.png"))


def write_source(folder: Path, images: dict[str, np.ndarray]) -> None:
    from PIL import Image

    folder.mkdir(parents=True)
    for name, pixels in images.items():
        Image.fromarray(pixels).save(folder / name)


def real_base(files: list[Path]) -> dict[str, np.ndarray]:
    from PIL import Image

    return {f.name: np.asarray(Image.open(f).convert("L")) for f in files}


def new_batch(base: dict[str, np.ndarray], distinct: list[Path], n: int, rng: np.random.Generator
              ) -> tuple[dict[str, np.ndarray], list[tuple[str, str]]]:
    """n images: 10% crops (85-97% of each side, half resized back) and 10% CLAHE copies of base knees, the rest
    distinct knees; and the planted (new name, base name) pairs."""
    import cv2
    from PIL import Image

    names = sorted(base)
    picks = rng.choice(len(names), size=n // 5, replace=False)
    out, planted = {}, []
    clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))
    for j, p in enumerate(picks):
        src = base[names[p]]
        if j % 2 == 0:
            h, w = src.shape
            fy, fx = rng.uniform(0.85, 0.97, 2)
            ch, cw = int(h * fy), int(w * fx)
            y0, x0 = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
            img = src[y0 : y0 + ch, x0 : x0 + cw]
            if j % 4 == 0:
                img = np.asarray(Image.fromarray(img).resize((w, h), Image.BICUBIC))
            kind = "crop"
        else:
            img, kind = clahe.apply(src), "clahe"
        name = f"{kind}{j:04d}-{names[p]}"
        out[name] = np.ascontiguousarray(img)
        planted.append((name, names[p]))
    for f in distinct[: n - len(out)]:
        out[f"new-{f.name}"] = np.asarray(Image.open(f).convert("L"))
    return out, planted


PATTERN = r"(?:[a-z]+\d+-|new-)?(?P<patient>\d+)(?P<laterality>[LR])\.png"

CHILD = """
import json, sys
from concurrent.futures import ProcessPoolExecutor
import flows  # noqa: F401  (the ORTHO_* settings, as `ortho` applies them)
from catalog.ids import new_run_id
from catalog.workspace import Workspace
from curation.run import curate, write_signature_part

def signed(root, part, batch):
    return write_signature_part(Workspace.open(root), part, batch)

def two_processes(ws, batches):  # as `ortho curate --runner processes --workers 2`, without Prefect
    prefix = new_run_id()
    with ProcessPoolExecutor(2) as pool:
        jobs = [pool.submit(signed, str(ws.root), f"{prefix}-{i:06d}", b) for i, b in enumerate(batches)]
        for job in jobs:
            yield job.result()

s = curate(Workspace.open(sys.argv[1]), full=sys.argv[2] == "full", map_signatures=two_processes)
print(json.dumps(s.__dict__, default=str))
"""


def child_curate(ws, full: bool, env: dict) -> dict:
    with tempfile.NamedTemporaryFile("r") as peak:
        t = time.perf_counter()
        out = subprocess.run([TIME, "-f", "%M", "-o", peak.name, sys.executable, "-c", CHILD, str(ws.root),
                              "full" if full else "auto"], cwd=ROOT, capture_output=True, text=True,
                             env=dict(env, PYTHONPATH=str(ROOT)))
        wall = time.perf_counter() - t
        rss = int(peak.read().split()[-1]) / 1024
    if out.returncode:
        lines = [x for x in out.stderr.splitlines() if x.strip()]
        raise RuntimeError(f"curation failed: {lines[-1] if lines else out.returncode}")
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    return {"wall_s": round(wall, 1), "peak_rss_mb": round(rss), "summary": summary}


def planted_found(ws, planted: list[tuple[str, str]]) -> dict:
    """Of the planted (new, base) pairs: how many share a group, per kind."""
    from catalog import db

    with db.connection(ws, private=True) as con:
        rows = con.execute("""SELECT l.path, i.dup_group FROM images i JOIN lineage l USING (file_id)""").fetchall()
    group = {Path(p).name: g for p, g in rows}
    out = {}
    for new, old in planted:
        kind = re.match(r"[a-z]+", new).group()
        hit = group.get(new) is not None and group.get(new) == group.get(old)
        out.setdefault(kind, [0, 0])
        out[kind][0] += hit
        out[kind][1] += 1
    return out


def groups_of(ws) -> set[frozenset]:
    from catalog import db

    return {frozenset(ids) for (ids,) in db.query(ws, "SELECT list(image_id) FROM dup_groups GROUP BY dup_group")[1]}


def pairs_grouped(ws, pairs: list[tuple[str, str]]) -> int:
    """How many of the planted synthetic pairs share a group."""
    from catalog import db

    group = dict(db.query(ws, "SELECT image_id, dup_group FROM dup_groups")[1])
    return sum(group.get(a) is not None and group.get(a) == group.get(b) for a, b in pairs)


def differing(ws, only: set[frozenset]) -> dict:
    """Groups found by one run only, by what they hold: synthetic images only, or real knees."""
    from catalog import db

    real = {i for (i,) in db.query(ws, "SELECT image_id FROM images WHERE source IN ('real-base', 'nightly')")[1]}
    out = {"synthetic": 0, "real": 0}
    for g in only:
        out["real" if g & real else "synthetic"] += 1
    return out


def ingest_images(ws, folder: Path, source: str, images: dict[str, np.ndarray]) -> float:
    """The images written as PNG files in `folder`, registered as a public knee source and ingested for real:
    the ingest's seconds."""
    from ingest.run import ingest_source
    from ingest.sources import Source, add_source

    write_source(folder, images)
    add_source(ws, Source(source, str(folder), "public", path_pattern=PATTERN, modality="DX", body_part="knee"))
    t = time.perf_counter()
    ingest_source(ws, source)
    return round(time.perf_counter() - t, 1)


def incremental_size(n: int, args, root: Path, env: dict) -> dict:
    from catalog.workspace import Workspace

    from bench.catalog import write_catalog

    rng = np.random.default_rng(n)
    files = knee_files()
    base_files, distinct = files[: args.real], files[args.real :]
    ws = Workspace.open(root / f"ws-{n}")
    r: dict = {"images": n, "new": args.new, "real": len(base_files)}
    t = time.perf_counter()
    write_catalog(ws, n - len(base_files), seed=n, signature_batch=0)
    synthetic_pairs = write_features(ws, descriptor_pool(rng), rng)
    r["synthetic_s"] = round(time.perf_counter() - t, 1)
    base = real_base(base_files)
    r["ingest_base_s"] = ingest_images(ws, root / f"src-{n}" / "base", "real-base", base)
    print(f"  {n:,}: catalog written ({r['synthetic_s']} s), {len(base)} real knees ingested", flush=True)
    r["first"] = child_curate(ws, False, env)
    r["synthetic_pairs"] = len(synthetic_pairs)
    r["synthetic_pairs_first"] = pairs_grouped(ws, synthetic_pairs)
    print(f"  {n:,}: first curation {r['first']['wall_s']} s, {r['first']['peak_rss_mb']} MB; "
          f"{r['first']['summary']['search']}; steps {r['first']['summary']['seconds']}", flush=True)
    batch, planted = new_batch(base, distinct, args.new, rng)
    r["ingest_new_s"] = ingest_images(ws, root / f"src-{n}" / "new", "nightly", batch)
    r["incremental"] = child_curate(ws, False, env)
    r["planted"] = planted_found(ws, planted)
    r["synthetic_pairs_incremental"] = pairs_grouped(ws, synthetic_pairs)
    s = r["incremental"]["summary"]
    print(f"  {n:,}: curation after {args.new} new: {r['incremental']['wall_s']} s, "
          f"{r['incremental']['peak_rss_mb']} MB; {s['search']}; steps {s['seconds']}; crop search {s['crop_search']}; "
          f"planted {r['planted']}",
          flush=True)
    if args.compare_full:
        incremental_groups = groups_of(ws)
        r["full"] = child_curate(ws, True, env)
        r["full_planted"] = planted_found(ws, planted)
        full_groups = groups_of(ws)
        r["synthetic_pairs_full"] = pairs_grouped(ws, synthetic_pairs)
        r["groups_equal"] = incremental_groups == full_groups
        r["groups_only_incremental"] = differing(ws, incremental_groups - full_groups)
        r["groups_only_full"] = differing(ws, full_groups - incremental_groups)
        print(f"  {n:,}: full curation of the grown catalog {r['full']['wall_s']} s, {r['full']['peak_rss_mb']} MB;"
              f" groups equal: {r['groups_equal']} (only incremental {r['groups_only_incremental']}, only full "
              f"{r['groups_only_full']}); planted {r['full_planted']}; synthetic pairs grouped: first "
              f"{r['synthetic_pairs_first']}, incremental {r['synthetic_pairs_incremental']}, full "
              f"{r['synthetic_pairs_full']} of {r['synthetic_pairs']}", flush=True)
    r["index_mb"] = round(sum(p.stat().st_size for p in (ws.catalog_dir / "curation-index").rglob("*")
                              if p.is_file()) / 1e6)
    if not args.keep:
        shutil.rmtree(ws.root, ignore_errors=True)
        shutil.rmtree(root / f"src-{n}", ignore_errors=True)
    return r


def report(results: list[dict]) -> None:
    print(f"\n{'images':>10} {'first s':>8} {'first MB':>9} {'after new s':>12} {'MB':>6} {'search s':>9} "
          f"{'groups s':>9} {'growth':>7}")
    prev = None
    for r in results:
        inc = r["incremental"]
        growth = f"{math.log(inc['wall_s'] / prev['incremental']['wall_s']) / math.log(r['images'] / prev['images']):.2f}" \
            if prev else ""
        print(f"{r['images']:>10,} {r['first']['wall_s']:>8} {r['first']['peak_rss_mb']:>9} {inc['wall_s']:>12} "
              f"{inc['peak_rss_mb']:>6} {sum(v for k, v in inc['summary']['search'].items() if k.endswith('_s')):>9.1f} "
              f"{inc['summary']['seconds'].get('groups', 0):>9} {growth:>7}")
        prev = r
    last = results[-1]
    if last["images"] != GOAL_AT and len(results) > 1:
        a, b = results[-2], results[-1]
        e = math.log(b["incremental"]["wall_s"] / a["incremental"]["wall_s"]) / math.log(b["images"] / a["images"])
        est = b["incremental"]["wall_s"] * (GOAL_AT / b["images"]) ** e
        print(f"extrapolated to {GOAL_AT:,} at exponent {e:.2f}: {est:.0f} s (goal: under {GOAL_S:.0f} s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default=None, help="catalog sizes (default: 100000,1200000; --incremental: "
                                                  "100000,300000,1200000)")
    ap.add_argument("--incremental", action="store_true", help="a curation after adding --new images (issue 16)")
    ap.add_argument("--new", type=int, default=1000)
    ap.add_argument("--real", type=int, default=1000, help="real knees in the base catalog (pixels in the store)")
    ap.add_argument("--compare-full", action="store_true", help="also a full curation of the grown catalog")
    ap.add_argument("--root", default=None, help="where the workspaces go (default: a temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the workspaces")
    ap.add_argument("--memory", default=None, help="ORTHO_DUCKDB_MEMORY for the curations (default: the project's)")
    ap.add_argument("--out", default=None, help="write the figures as JSON")
    args = ap.parse_args()
    if not args.incremental:
        search_scaling([int(x) for x in (args.sizes or "100000,1200000").split(",")])
        return
    env = dict(os.environ)
    if args.memory:
        env["ORTHO_DUCKDB_MEMORY"] = args.memory
    root = Path(args.root or tempfile.mkdtemp(prefix="bench-curate-"))
    root.mkdir(parents=True, exist_ok=True)
    results = []
    for n in [int(x) for x in (args.sizes or "100000,300000,1200000").split(",")]:
        results.append(incremental_size(n, args, root, env))
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(results, indent=1, default=str))
    report(results)


if __name__ == "__main__":
    main()
