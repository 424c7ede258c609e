"""`ortho embed`, `ortho cluster` and `ortho search`: embeddings as catalog facts, their hierarchical clusters, and
more like this."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from curation.clusters import ClusterConfig
from curation.similar import MORE_LIKE_K, more_like
from evaluation.config import POOLS, EmbedConfig
from flows.cli.common import (WorkspaceOpt, console, fail, open_workspace, progress_bars, setting, setup_logging,
                              split_csv)


def embed(
    checkpoint: str = typer.Option(..., help="A pretraining run (its name under runs/ or its folder), an exported "
                                             "backbone.safetensors, or (with --model) a local timm/DINOv3 file"),
    query: Optional[str] = setting(EmbedConfig, "query", help="SQL returning image_id [default: every image]"),
    model: Optional[str] = setting(EmbedConfig, "model_name",
                                   help="Architecture of --checkpoint when it is not an exported backbone"),
    img_size: Optional[int] = setting(EmbedConfig, "img_size", help="Input size [default: the backbone's]"),
    pool: str = setting(EmbedConfig, "pool", help="cls (the CLS token) or mean (of the patch tokens)"),
    batch_size: int = setting(EmbedConfig, "batch_size", help="Images per forward pass"),
    workspace: WorkspaceOpt = None,
) -> None:
    """One vector per image from a backbone, incrementally, as the `embeddings` view."""
    from flows.embed import embed_flow
    from flows.server import one_prefect_server

    from evaluation.catalog_embed import resolve_checkpoint

    ws = open_workspace(workspace)
    setup_logging(ws, "embed")
    if not resolve_checkpoint(ws, checkpoint).exists():  # one line before a flow starts
        fail(f"no checkpoint {checkpoint}: give a run's name or folder, or a weights file")
    if pool not in POOLS:
        fail(f"--pool {pool}: use one of {', '.join(POOLS)}")
    config = EmbedConfig(checkpoint, model_name=model, img_size=img_size, query=query, pool=pool,
                         batch_size=batch_size)
    with one_prefect_server(), progress_bars(transient=False) as bars:
        bars.update("embed")
        bars.hook("embed", lambda done, total: bars.update("embed", done, total))
        s = embed_flow(str(ws.root), config)
    t = Table("", "value", title=f"embeddings of {s['model']}")
    for label, value in (("model sha256", s["sha256"]), ("dimensions", s["dims"]),
                         ("images selected", f"{s['selected']:,}"), ("already embedded", f"{s['already']:,}"),
                         ("embedded now", f"{s['embedded']:,}"), ("unreadable (skipped)", f"{len(s['unreadable']):,}"),
                         ("seconds", f"{s['seconds']:.1f}"), ("images / s", f"{s['images_per_s']:.1f}")):
        t.add_row(label, str(value))
    for reason, n in (s.get("unreadable_reasons") or {}).items():
        t.add_row(f"  unreadable: {reason}", f"{n:,}")
    console.print(t)


def cluster(
    model: Optional[str] = setting(ClusterConfig, "model", help="Model key (ortho sql \"SELECT DISTINCT model FROM "
                                                                "embeddings\") [default: the most recently embedded]"),
    k: Optional[str] = typer.Option(None, help="Clusters per level, finest first, e.g. 1000,100,10 [default: about "
                                               "25 images per level-1 cluster, then a fifth per level]"),
    seed: int = setting(ClusterConfig, "seed", help="Seed of the k-means"),
    niter: int = setting(ClusterConfig, "niter", help="k-means iterations per level"),
    workspace: WorkspaceOpt = None,
) -> None:
    """Hierarchical k-means over a model's embeddings (Vo et al. 2024), as the `clusters` view."""
    from curation.clusters import cluster_embeddings

    ws = open_workspace(workspace)
    setup_logging(ws, "cluster")
    try:
        ks = tuple(split_csv([k], int)) if k else ()
    except ValueError:
        fail(f"--k {k}: give clusters per level as numbers, e.g. 1000,100,10")
    if any(n < 2 for n in ks):
        fail("--k: every level needs at least 2 clusters")
    with console.status("clustering"):
        s = cluster_embeddings(ws, ClusterConfig(model=model, ks=ks, seed=seed, niter=niter))
    t = Table("level", "clusters", "smallest", "largest", title=f"clusters of {s.model} ({s.images:,} images, "
                                                                 f"{s.seconds:.1f} s)")
    for level, n in enumerate(s.ks, 1):
        t.add_row(str(level), str(n), *map(str, s.sizes[level]))
    console.print(t)


def search(
    like: str = typer.Option(..., "--like", help="The image id to find more like"),
    k: int = typer.Option(MORE_LIKE_K, help="How many"),
    query: Optional[str] = typer.Option(None, help="Only among the images this SQL returns (image_id)"),
    model: Optional[str] = typer.Option(None, help="Model key [default: the most recently embedded]"),
    out: Optional[Path] = typer.Option(None, help="Also write the ids to this CSV file"),
    workspace: WorkspaceOpt = None,
) -> None:
    """More like this: the images nearest to one image by embedding (cosine)."""

    if k < 1:
        fail("--k must be at least 1")
    ws = open_workspace(workspace)
    hits = more_like(ws, like, k=k, query=query, model=model)
    t = Table("rank", "image_id", "similarity", title=f"more like {like[:16]}")
    for rank, h in enumerate(hits, 1):
        t.add_row(str(rank), h.image_id, f"{h.similarity:.4f}")
    console.print(t)
    if out:
        out.write_text("image_id,similarity\n" + "".join(f"{h.image_id},{h.similarity:.6f}\n" for h in hits))
