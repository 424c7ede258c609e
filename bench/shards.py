"""Shard loading throughput against individual files and the PNG decode limit.

    python bench/shards.py            # on ../shared/data/knee-xray-kl

Same images, same run: (1) pure PNG decoding of the store objects already in memory (the limit,
one core; with two workers the limit is taken as twice that), (2) a torch Dataset reading each
PNG file from the store, (3) the shard loader (webdataset pipeline over the tars). Batches of 64
are stacked into one tensor in the worker (shared memory to the trainer). Samples/s with 0, 1
and 2 DataLoader workers, best of 3 interleaved runs, and ratios to the limit.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from catalog import files  # noqa: E402

files.configure(fsync=False)  # a benchmark needs no power-loss durability

import numpy as np  # noqa: E402
import torch  # noqa: E402

from catalog import db  # noqa: E402
from catalog.workspace import Workspace  # noqa: E402
from catalog.pixels import decode_png  # noqa: E402
from ingest.run import ingest_source  # noqa: E402
from ingest.sources import Source, add_source  # noqa: E402
from shards.reader import ShardStream  # noqa: E402
from shards.spec import ShardSetSpec  # noqa: E402
from shards.writer import build_shard_set  # noqa: E402


def stack_files(images: list) -> torch.Tensor:
    # one tensor per batch travels from a worker through shared memory, as in training
    return torch.from_numpy(np.stack(images))


def stack_samples(samples: list) -> tuple:
    return torch.from_numpy(np.stack([s["image"] for s in samples])), [s["meta"] for s in samples]


class StoreFiles(torch.utils.data.Dataset):
    def __init__(self, paths: list[Path]):
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        return decode_png(self.paths[i].read_bytes())


def prepare(tmp: Path) -> tuple[Workspace, list[Path], Path, str]:
    ws = Workspace.open(tmp / "ws")
    kl = ROOT.parent / "shared" / "data" / "knee-xray-kl"
    if kl.is_dir():
        add_source(ws, Source("kl", str(kl), "public", modality="DX", body_part="knee"))
        label = "knee-xray-kl (224x224, 8-bit)"
    else:  # phantom sizes vary: stacking needs one size
        raise SystemExit("bench/shards.py needs ../shared/data/knee-xray-kl (equal-size images to stack)")
    ingest_source(ws, "kl", batch_size=512)
    paths = [ws.root / p for (p,) in db.query(ws, "SELECT store_path FROM images ORDER BY image_id")[1]]
    manifest, _, _ = build_shard_set(ws, ShardSetSpec("bench", "SELECT image_id FROM images", samples_per_shard=256))
    return ws, paths, manifest, label


BATCH = 64
REPEAT = 3


def rate(loader, batches_expected: int) -> float:
    """Samples per second over one pass."""
    t = time.perf_counter()
    n = sum(len(batch[0]) if isinstance(batch, (tuple, list)) and torch.is_tensor(batch[0]) else len(batch) for batch in loader)
    elapsed = time.perf_counter() - t
    assert n >= 0.9 * batches_expected * BATCH, (n, batches_expected)
    return n / elapsed


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ws, paths, manifest, label = prepare(Path(tmp))
        blobs = [p.read_bytes() for p in paths]
        limit = 0.0
        for _ in range(REPEAT):
            t = time.perf_counter()
            for b in blobs:
                decode_png(b)
            limit = max(limit, len(blobs) / (time.perf_counter() - t))
        mb = sum(len(b) for b in blobs) / 1e6
        print(f"{len(blobs)} images, {mb:.1f} MB of PNG, {label}")
        print(f"decode limit (in memory, 1 core): {limit:,.0f} samples/s\n")
        print(f"{'workers':>7} {'files/s':>9} {'shards/s':>9} {'limit':>8} {'files/limit':>11} {'shards/limit':>12} {'shards/files':>12}")
        for workers in (0, 1, 2):
            # batches of 64 made in the workers, as training reads (one IPC message per batch)
            kw = dict(num_workers=workers, prefetch_factor=4 if workers else None)
            files = shards = 0.0
            for _ in range(REPEAT):  # best of REPEAT, interleaved: this machine's speed drifts
                files = max(files, rate(torch.utils.data.DataLoader(StoreFiles(paths), batch_size=BATCH, shuffle=True,
                                                                    collate_fn=stack_files, **kw), len(paths) // BATCH))
                stream = ShardStream(str(manifest), num_workers=workers, shuffle_buffer=500, batch_size=BATCH,
                                     collate=stack_samples)
                shards = max(shards, rate(torch.utils.data.DataLoader(stream, batch_size=None, **kw), len(paths) // BATCH))
            lim = limit * max(workers, 1)
            print(f"{workers:>7} {files:>9,.0f} {shards:>9,.0f} {lim:>8,.0f} {files / lim:>11.2f} {shards / lim:>12.2f} {shards / files:>12.2f}")


if __name__ == "__main__":
    main()
