"""Two CPU processes under torch.distributed (gloo), DDP training on the shard loader: disjoint
samples, equal batch counts, no hang."""

import datetime as dt
import json
import os

import pytest
import torch
import torch.distributed as dist

from shards.spec import ShardSetSpec
from shards.writer import build_shard_set


def to_tensor(sample):
    return {"key": sample["__key__"], "x": torch.tensor([float(sample["image"].mean())])}


def collate(items):
    return [i["key"] for i in items], torch.stack([i["x"] for i in items])


def _worker(rank: int, world: int, manifest: str, init: str, out: str) -> None:
    from shards.reader import build_loader

    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world,
                            timeout=dt.timedelta(seconds=60))
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(1, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.0)

    loader = build_loader(manifest, batch_size=3, num_workers=1, transform=to_tensor, collate=collate, shuffle_buffer=10)
    keys, batches = [], 0
    for batch_keys, x in loader:
        loss = model(x).sum()  # every step all-reduces gradients: unequal counts would hang here
        opt.zero_grad()
        loss.backward()
        opt.step()
        keys += batch_keys
        batches += 1
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump({"keys": keys, "batches": batches, "len": len(loader)}, f)
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_rank_ddp_reads_disjoint_samples_with_equal_batches(tmp_path, phantom_workspace):
    import shutil

    from catalog.workspace import Workspace

    src, _ = phantom_workspace
    ws = Workspace.open(tmp_path / "ws")
    shutil.copytree(src.root, ws.root, dirs_exist_ok=True, ignore=shutil.ignore_patterns("shards"))
    path, m, _ = build_shard_set(ws, ShardSetSpec("s", "SELECT image_id FROM images", samples_per_shard=11))
    torch.multiprocessing.spawn(_worker, args=(2, str(path), str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["batches"] == r1["batches"] == r0["len"] > 0
    assert not set(r0["keys"]) & set(r1["keys"])
    assert len(r0["keys"]) == len(set(r0["keys"]))
