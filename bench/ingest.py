"""DICOM ingest throughput against the practical limit, and peak memory against file count.

    python bench/ingest.py                      # throughput + memory at 2,000 and 10,000 files
    python bench/ingest.py --memory 10000,100000

Throughput: the whole ingest path (read, parse, decode, de-identify, hash, PNG store, Parquet
part) over the same files as a bare `pydicom.dcmread(...).pixel_array` loop, on 1 and 2 worker
processes, printed as files/s, MB/s and the ratio whole/bare. Files: ../shared/data/dicom when
present, else pydicom's test MR files. Memory: ingest of N hard-linked replicas (exact duplicates
after the first of each, so every file is still read, decoded and hashed) in a child process;
peak RSS should not grow with N.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from catalog import files  # noqa: E402

files.configure(fsync=False)  # a benchmark needs no power-loss durability


def source_files(kind: str = "auto") -> list[Path]:
    shared = ROOT.parent / "shared" / "data" / "dicom"
    if shared.is_dir() and kind != "pydicom":
        return sorted(p for p in shared.rglob("*.dcm"))
    from pydicom.data import get_testdata_files

    return [Path(p) for p in get_testdata_files("MR*.dcm") + get_testdata_files("CT_small.dcm")]


def _bare(paths: list[str]) -> int:
    import pydicom

    n = 0
    for p in paths:
        n += pydicom.dcmread(p).pixel_array.size
    return n


def bare_rate(files: list[Path], workers: int) -> float:
    chunks = [[str(p) for p in files[i::workers]] for i in range(workers)]
    t = time.perf_counter()
    if workers == 1:
        _bare(chunks[0])
    else:
        with ProcessPoolExecutor(workers) as ex:
            list(ex.map(_bare, chunks))
    return len(files) / (time.perf_counter() - t)


def _batch(args):
    from catalog.workspace import Workspace
    from ingest.batch import BatchSpec, process_batch

    ws_root, batch_path = args
    return process_batch(Workspace.open(ws_root), BatchSpec.load(Path(batch_path))).files


def whole_rate(files: list[Path], workers: int, tmp: Path) -> float:
    from catalog.workspace import Workspace
    from ingest.run import ingest_source
    from ingest.sources import Source, add_source

    src = tmp / f"src-{workers}"
    src.mkdir()
    for i, p in enumerate(files):
        os.link(p, src / f"{i:06d}.dcm")
    ws = Workspace.open(tmp / f"ws-{workers}")
    add_source(ws, Source("bench", str(src), "internal"))

    def pool_map(ws_, batch_paths):
        from ingest.batch import BatchResult

        with ProcessPoolExecutor(workers) as ex:
            for n in ex.map(_batch, [(str(ws_.root), str(b)) for b in batch_paths]):
                yield BatchResult(files=n)

    batch = max(1, len(files) // (4 * workers))
    t = time.perf_counter()
    if workers == 1:
        summary = ingest_source(ws, "bench", batch_size=batch)
    else:
        summary = ingest_source(ws, "bench", batch_size=batch, map_batches=pool_map)
    elapsed = time.perf_counter() - t
    assert summary.result.files == len(files)
    return len(files) / elapsed


MEMORY_CHILD = """
import sys
from catalog import files
from catalog.workspace import Workspace
from ingest.run import ingest_source
from ingest.sources import Source, add_source
files.configure(fsync=False)
ws = Workspace.open(sys.argv[1])
add_source(ws, Source("mem", sys.argv[2], "internal"))
s = ingest_source(ws, "mem", batch_size=256)
# VmHWM is this process's own peak RSS in kB (ru_maxrss would keep the forking parent's peak)
print(s.result.files, next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")))
"""


def peak_memory(files: list[Path], n: int, tmp: Path) -> tuple[int, float, float]:
    src = tmp / f"mem-{n}"
    for i in range(n):
        d = src / f"{i // 1000:04d}"
        d.mkdir(parents=True, exist_ok=True)
        os.link(files[i % len(files)], d / f"{i:07d}.dcm")
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(tmp / f"wsmem-{n}"), str(src)], capture_output=True,
                         text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), check=True).stdout.split()
    return int(out[0]), int(out[1]) / 1024, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--memory", default="2000,10000", help="file counts for the peak-memory runs")
    ap.add_argument("--repeat", type=int, default=2, help="throughput repetitions (best is reported)")
    ap.add_argument("--memory-files", default="auto", choices=["auto", "pydicom"],
                    help="replicate shared/data/dicom (auto) or pydicom's small MR/CT files (faster at 100k)")
    ap.add_argument("--skip-throughput", action="store_true")
    args = ap.parse_args()
    files = source_files()
    mb = sum(p.stat().st_size for p in files) / 1e6
    print(f"{len(files)} DICOM files, {mb:.1f} MB ({'shared/data/dicom' if 'shared' in str(files[0]) else 'pydicom'})")
    print(f"{'workers':>7} {'bare files/s':>13} {'whole files/s':>14} {'whole MB/s':>11} {'ratio':>6}")
    for workers in () if args.skip_throughput else (1, 2):
        bare = max(bare_rate(files, workers) for _ in range(args.repeat))
        whole = 0.0
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory() as tmp:
                whole = max(whole, whole_rate(files, workers, Path(tmp)))
        print(f"{workers:>7} {bare:>13.1f} {whole:>14.1f} {whole * mb / len(files):>11.2f} {whole / bare:>6.2f}")
    mem_files = source_files(args.memory_files)
    print(f"\nmemory runs replicate {len(mem_files)} files ({args.memory_files})")
    print(f"{'files':>8} {'peak RSS MB':>12} {'seconds':>8} {'files/s':>8}")
    for n in [int(x) for x in args.memory.split(",") if x]:
        with tempfile.TemporaryDirectory() as tmp:
            done, rss, secs = peak_memory(mem_files, n, Path(tmp))
        print(f"{done:>8} {rss:>12.0f} {secs:>8.1f} {done / secs:>8.1f}")


if __name__ == "__main__":
    main()
