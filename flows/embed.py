"""Prefect flow for `ortho embed`: one task embeds the images without a vector of the model (the library does the
work and its incremental bookkeeping, evaluation/catalog_embed.py); the task gets the workspace path and the
settings, never arrays."""

from __future__ import annotations

from dataclasses import asdict
from functools import partial

import flows  # noqa: F401  (Prefect defaults)
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from catalog.workspace import Workspace
from evaluation.catalog_embed import embed_catalog
from evaluation.config import EmbedConfig
from flows import progress
from flows.firewall import firewall


@task(name="embed", retries=0, cache_policy=NO_CACHE, persist_result=False)
@firewall("embed")
def embed_task(workspace: str, settings: dict) -> dict:
    summary = embed_catalog(Workspace.open(workspace), EmbedConfig(**settings), partial(progress.report, "embed"))
    return {**asdict(summary), "images_per_s": summary.images_per_s}


@flow(name="embed", log_prints=False)
@firewall("embed")
def embed_flow(workspace: str, config: EmbedConfig) -> dict:
    return embed_task(workspace, asdict(config))
