"""Prefect flow for shard sets: a task per shard; tasks get a plan file path, not the records."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import flows  # noqa: F401  (Prefect defaults)
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from catalog.workspace import Workspace
from flows import settings
from flows.firewall import firewall
from flows.runners import build_task_runner, prefect_map
from shards.balance import BalanceSpec
from shards.manifest import ShardEntry
from shards.resample import DEFAULT_MAX_SIDE
from shards.writer import ShardPlan, build_shard_set, write_shard


@task(name="write-shard", retries=1, cache_policy=NO_CACHE, persist_result=False)
@firewall("write-shard")
def write_shard_task(workspace: str, plan_path: str, out_dir: str, runtime: dict | None = None) -> dict:
    settings.apply_task_settings(runtime)  # the flow's settings (flows/settings.py)
    entry = write_shard(Path(workspace), ShardPlan.load(Path(plan_path)), Path(out_dir))
    return entry.__dict__


def map_shards(workspace: str):
    """A task per shard, all submitted at once (a shard set has few, large shards)."""

    def run(plans: list[ShardPlan], out_dir: Path) -> list[ShardEntry]:
        return [ShardEntry(**r) for r in prefect_map(partial(_submit_shard, workspace, out_dir), plans)]

    return run


def _submit_shard(workspace: str, out_dir: Path, plan: ShardPlan):
    path = out_dir / f".plan-{plan.index:06d}.json"
    plan.save(path)
    return write_shard_task.submit(workspace, str(path), str(out_dir), settings.current().as_dict())


@flow(name="build-shards", log_prints=False)
@firewall("build-shards")
def build_shards_flow(workspace: str, name: str, query: str, include_excluded: bool = False, evaluation: bool = False,
                      seed: int = 0,
                      target_size: str | None = "512MB", samples_per_shard: int | None = None,
                      overwrite: bool = False, max_side: int | None = DEFAULT_MAX_SIDE, wait_s: float = 0.0,
                      codec: str | None = None, balance: str | None = None, target: int | None = None) -> dict:
    """`balance` (clusters:LEVEL or a column of images) with `target`: an even draw (shards/balance.py)."""
    ws = Workspace.open(workspace)
    with ws.write_lock(wait_s):  # the writer's own lock is re-entrant: this one only adds the wait
        path, manifest, built = build_shard_set(ws, name, query, include_excluded=include_excluded,
                                                evaluation=evaluation, seed=seed, target_size=target_size,
                                                samples_per_shard=samples_per_shard, overwrite=overwrite,
                                                max_side=max_side, map_shards=map_shards(str(ws.root)), codec=codec,
                                                balance=BalanceSpec(balance, target) if balance else None)
    return {"manifest": str(path), "samples": manifest.samples, "shards": len(manifest.shards), "built": built}


def run_build(workspace: str, name: str, query: str, runner: str = "threads", workers: int | None = None, **kwargs) -> dict:
    return build_shards_flow.with_options(task_runner=build_task_runner(runner, workers))(workspace, name, query, **kwargs)
