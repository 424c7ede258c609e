"""Soak: ingest and curate N distinct files in one child process; files/s, memory over time, disk.

    python bench/soak.py --files 100000            # the issue's soak (about an hour on 2 cores)
    python bench/soak.py --files 10000 --keep /tmp/soak

Files are replicated from real images with perturbations so that every one is distinct (a
different pixel hash, so each is decoded, de-identified, hashed, encoded and stored, and curation
signs and compares it): half DICOM (pydicom's real MR/CT files, or ../shared/data/dicom when
present, with a few pixels changed and new UIDs), half PNG (the real knee radiographs of
../shared/data/knee-xray-kl when present, else phantom radiographs, with a few pixels changed).

Memory is sampled every 0.5 s from /proc (RSS of the child and its workers). Ingest should be
flat: the peak of its last quarter is compared with the peak of its second quarter (ratio close
to 1). Curation is reported apart: RSS while signing new images (flat) and the peak of its global
passes (near-duplicate search, quality, leakage over the whole catalog), which grows with the
catalog; compare it across --files. Disk: store + catalog against the input.
Prints a table and writes soak.png (RSS and files done over time) beside the workspace.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from catalog import files  # noqa: E402

files.configure(fsync=False)  # a benchmark needs no power-loss durability

CHILD = """
import json, sys, time
from catalog import files
from catalog.workspace import Workspace
from curation.run import curate
from ingest.run import ingest_source
files.configure(fsync=False)
ws = Workspace.open(sys.argv[1])
t0 = time.time()
summaries = [ingest_source(ws, name, batch_size=256) for name in ("soak-dicom", "soak-png")]
t1 = time.time()
open(sys.argv[2], "w").write(str(t1))  # the parent splits its memory samples into ingest and curate
c = curate(ws)
t2 = time.time()
print(json.dumps({"ingest_s": t1 - t0, "curate_s": t2 - t1, "files": sum(s.files_seen for s in summaries),
                  "images": c.images, "dup_groups": c.dup_groups}))
"""


def dicom_seeds() -> list[bytes]:
    shared = ROOT.parent / "shared" / "data" / "dicom"
    if shared.is_dir():
        paths = sorted(shared.rglob("*.dcm"))[:40]
    else:
        from pydicom.data import get_testdata_files

        paths = [Path(p) for p in get_testdata_files("MR_small.dcm") + get_testdata_files("CT_small.dcm")]
    return [p.read_bytes() for p in paths]


def png_seeds() -> list[np.ndarray]:
    from PIL import Image

    shared = ROOT.parent / "shared" / "data" / "knee-xray-kl" / "train"
    if shared.is_dir():
        return [np.asarray(Image.open(p).convert("L")) for p in sorted(shared.rglob("*.png"))[:200]]
    from flows.phantom import draw_radiograph

    rng = np.random.default_rng(0)
    return [(draw_radiograph(g % 5, "L", rng, 224) >> 4).astype(np.uint8) for g in range(20)]


def write_corpus(root: Path, n: int) -> int:
    """n distinct files under root/dicom and root/png; returns their total bytes."""
    import pydicom
    from PIL import Image
    from pydicom.uid import generate_uid

    rng = np.random.default_rng(0)
    dicoms, pngs = dicom_seeds(), png_seeds()
    total = 0
    decoded = []
    for data in dicoms:
        ds = pydicom.dcmread(io.BytesIO(data))
        try:
            arr = ds.pixel_array
            if ds.file_meta.TransferSyntaxUID.is_compressed:
                ds.decompress()  # the replicas carry raw pixels, so a few can be changed
        except Exception:
            continue  # a seed pydicom cannot decode here
        if arr.ndim == 2:
            decoded.append((ds, arr))
    for i in range(n):
        if i % 2 == 0 and decoded:
            ds, arr = decoded[(i // 2) % len(decoded)]
            out = arr.copy()
            flat = out.reshape(-1)
            flat[rng.integers(0, flat.size, 4)] += 1 + i % 7  # a few pixels change: a new pixel hash
            ds.PixelData = out.tobytes()
            ds.SOPInstanceUID = generate_uid()
            path = root / "dicom" / f"{i // 1000:04d}" / f"{i:07d}.dcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(path)
        else:
            img = pngs[(i // 2) % len(pngs)].copy()
            img.reshape(-1)[rng.integers(0, img.size, 4)] ^= np.uint8(1 + i % 7)
            path = root / "png" / f"{i // 1000:04d}" / f"{i:07d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(path)
        total += path.stat().st_size
    return total


def rss_mb(pid: int) -> float:
    """RSS of a process and its children (the ingest workers), from /proc."""
    total = 0
    pids = [pid]
    try:
        pids += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--keep", help="Work here and keep the corpus and workspace (default: a temporary folder)")
    args = ap.parse_args()
    from catalog.workspace import Workspace
    from ingest.sources import Source, add_source

    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="soak-"))
    corpus, wsdir = base / "corpus", base / "workspace"
    shutil.rmtree(wsdir, ignore_errors=True)
    t0 = time.time()
    if not (corpus / f".complete-{args.files}").exists():
        shutil.rmtree(corpus, ignore_errors=True)
        corpus.mkdir(parents=True)
        write_corpus(corpus, args.files)
        (corpus / f".complete-{args.files}").write_text("")
    input_bytes = du(corpus)
    print(f"corpus: {args.files} files, {input_bytes / 1e6:.0f} MB ({time.time() - t0:.0f} s to write)")
    ws = Workspace.open(wsdir)
    add_source(ws, Source("soak-dicom", str(corpus / "dicom"), "internal"))
    add_source(ws, Source("soak-png", str(corpus / "png"), "public", modality="DX", body_part="knee"))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    phase_file = base / "ingest-ended"
    phase_file.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(wsdir), str(phase_file)], env=env,
                            stdout=subprocess.PIPE, text=True)
    samples = []  # (seconds, rss MB, catalog parts: one per batch of 256 files ingested)
    start = time.time()
    while proc.poll() is None:
        parts = sum(1 for _ in os.scandir(ws.parts_dir)) if ws.parts_dir.exists() else 0
        samples.append((time.time() - start, rss_mb(proc.pid), parts))
        time.sleep(0.5)
    out = proc.stdout.read()
    if proc.returncode:
        raise SystemExit(f"soak child failed with status {proc.returncode}")
    result = json.loads(out.strip().splitlines()[-1])
    t, rss = np.array([s[0] for s in samples]), np.array([s[1] for s in samples])
    ingest_end = float(phase_file.read_text()) - start
    ing = rss[t <= ingest_end]
    q = len(ing) // 4
    early, late = (ing[q:2 * q].max(), ing[3 * q:].max()) if q else (ing.max(), ing.max())
    cur = rss[t > ingest_end]
    store_b, catalog_b = du(ws.store_dir), du(ws.catalog_dir)
    rows = [("files", f"{result['files']:,}"), ("images", f"{result['images']:,}"),
            ("ingest", f"{result['ingest_s']:.0f} s = {result['files'] / result['ingest_s']:.1f} files/s"),
            ("curate", f"{result['curate_s']:.0f} s = {result['images'] / max(result['curate_s'], 1e-9):.1f} images/s"),
            ("peak RSS (child + workers)", f"{rss.max():.0f} MB"),
            ("ingest: peak RSS, 2nd vs last quarter", f"{early:.0f} -> {late:.0f} MB (ratio {late / early:.2f})"),
            ("curate: RSS while signing, peak of the global passes",
             f"{np.median(cur):.0f} MB, {cur.max():.0f} MB" if len(cur) else "n/a"),
            ("input", f"{input_bytes / 1e6:.0f} MB"),
            ("store + catalog", f"{store_b / 1e6:.0f} + {catalog_b / 1e6:.1f} MB = "
                                f"{(store_b + catalog_b) / input_bytes:.2f} x input")]
    from rich.console import Console
    from rich.table import Table

    table = Table("", "", title=f"soak: {args.files:,} files on {os.cpu_count()} cores")
    for k, v in rows:
        table.add_row(k, v)
    Console().print(table)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(t, rss, label="RSS MB (child + workers)")
    ax.axvline(ingest_end, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("seconds")
    ax.set_ylabel("MB")
    ax2 = ax.twinx()
    ax2.plot(t, [s[2] for s in samples], color="tab:orange", label="catalog parts (batches of 256 files)")
    ax2.set_ylabel("catalog parts")
    ax.set_title(f"soak: {args.files:,} files (ingest then curate)")
    ax.legend(loc="upper left", fontsize=8)
    ax2.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(base / "soak.png", dpi=100)
    print(f"plot: {base / 'soak.png'}")
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
