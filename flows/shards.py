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
from flows.runners import SHARDS_RUNNER, RunnerConfig, prefect_map
from shards.manifest import ShardEntry
from shards.spec import ShardSetSpec
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
def build_shards_flow(workspace: str, spec: ShardSetSpec, overwrite: bool = False, wait_s: float = 0.0) -> dict:
    """`spec`: what the set holds and how it is cut (shards/spec.py); Prefect records it as plain values."""
    ws = Workspace.open(workspace)
    with ws.write_lock(wait_s):  # the writer's own lock is re-entrant: this one only adds the wait
        path, manifest, built = build_shard_set(ws, spec, overwrite=overwrite,
                                                map_shards=map_shards(str(ws.root)))
    return {"manifest": str(path), "samples": manifest.samples, "shards": len(manifest.shards), "built": built}


def run_build(workspace: str, spec: ShardSetSpec, runner: RunnerConfig = SHARDS_RUNNER, overwrite: bool = False,
              wait_s: float = 0.0) -> dict:
    return build_shards_flow.with_options(task_runner=runner.build())(workspace, spec, overwrite, wait_s)
