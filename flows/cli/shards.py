"""`ortho shards build | list | verify | show`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from flows.cli.common import WorkspaceOpt, cell, console, err, fail, open_workspace, setting, wait_option
from flows.runners import SHARDS_RUNNER, RunnerConfig
from flows.server import one_prefect_server
from shards.codecs import CODECS
from shards.spec import ShardSetSpec
from shards.writer import shard_sets_dir


def shards_build(
    name: str,
    query: str = typer.Option(..., "--query", help="SQL returning image_id, e.g. SELECT image_id FROM images WHERE body_part='knee'"),
    include_excluded: bool = setting(ShardSetSpec, "include_excluded",
                                     help="Keep images curation excluded (quality, duplicates, leakage guard)"),
    evaluation: bool = setting(ShardSetSpec, "evaluation",
                               help="An evaluation set: keep held-out (val/test) images, still drop excluded ones"),
    target_size: str = setting(ShardSetSpec, "target_size", help="Approximate bytes per shard"),
    samples_per_shard: Optional[int] = setting(ShardSetSpec, "samples_per_shard",
                                               help="Cut shards by sample count instead of size"),
    seed: int = setting(ShardSetSpec, "seed", help="Seed of the sample order"),
    max_side: int = setting(ShardSetSpec, "max_side", "--max-side", help="Reduce images whose longer side exceeds "
                            "this (antialiased, at their bit depth; the store keeps full size); 0: as stored"),
    codec: str = setting(ShardSetSpec, "codec", help=f"Payload codec: {' or '.join(CODECS)} (lossless, at the image's "
                         "depth; htj2k: .j2c HTJ2K codestreams, GPU-decodable; docs/training.md)"),
    balance: Optional[str] = setting(ShardSetSpec, "balance", help="Draw --target images evenly over clusters:LEVEL "
                                     "(ortho cluster) or over the values of a column of images (view, body_part, "
                                     "source)"),
    target: Optional[int] = setting(ShardSetSpec, "target", help="Images to draw with --balance"),
    overwrite: bool = typer.Option(False, help="Replace an existing shard set of this name"),
    runner: str = setting(SHARDS_RUNNER, "runner", help="Task runner: threads, processes, dask or ray"),
    workers: Optional[int] = setting(SHARDS_RUNNER, "workers", help="Shards written in parallel [default: CPU count]"),
    wait: float = wait_option(),
    out: Optional[str] = typer.Option(None, "--out", help="Also copy the set there: a folder or s3://bucket/sets/NAME "
                                                         "(tars first, manifest last; keys from AWS_* variables)"),
    workspace: WorkspaceOpt = None,
) -> None:
    """Write a shard set from a SQL selection: tars + manifest.json with checksums."""
    from flows.shards import run_build
    from shards.writer import check_build, parse_size

    if (balance is None) != (target is None):
        fail("--balance and --target go together: e.g. --balance clusters:2 --target 10000")
    ws = open_workspace(workspace)
    if target_size and not samples_per_shard:
        parse_size(target_size)
    spec = ShardSetSpec(name, query, include_excluded=include_excluded, evaluation=evaluation, seed=seed,
                        target_size=target_size, samples_per_shard=samples_per_shard, max_side=max_side, codec=codec,
                        balance=balance, target=target)
    with ws.write_lock(wait):  # as the build will: a busy workspace is said first
        *_, current = check_build(ws, spec, overwrite)
    if current is not None:
        manifest, verb = shard_sets_dir(ws) / name / "manifest.json", "up to date:"
        samples, shards = current.samples, len(current.shards)
    else:
        with one_prefect_server(), err.status(f"building shard set {name}"):
            result = run_build(str(ws.root), spec, RunnerConfig(runner, workers), overwrite=overwrite, wait_s=wait)
        manifest, verb = Path(result["manifest"]), "built" if result["built"] else "up to date:"
        samples, shards = result["samples"], result["shards"]
    console.print(f"{verb} {samples} samples in {shards} shards -> {manifest}")
    if out:
        from shards.publish import publish_shard_set

        with err.status(f"copying shard set {name} to --out"):
            where, copied = publish_shard_set(manifest, out)
        console.print(f"{'copied' if copied else 'up to date:'} {where}")
    show_manifest(manifest)


def shards_list(workspace: WorkspaceOpt = None) -> None:
    """Shard sets of the workspace."""
    from shards.writer import list_shard_sets

    t = Table("name", "samples", "shards", "MB", "codec", "created", "query", title="shard sets")
    for m in list_shard_sets(open_workspace(workspace)):
        t.add_row(*map(cell, (m.name, m.samples, len(m.shards), f"{m.bytes / 1e6:.1f}", m.codec.get("name", "png"),
                              m.created, m.query)))
    console.print(t)


def _manifest_path(manifest: Path, workspace: Optional[Path]) -> Path:
    """A manifest path, or the name of one of the workspace's shard sets (looked up, nothing created)."""
    if not manifest.exists() and len(manifest.parts) == 1:
        from catalog.workspace import Workspace, resolve_workspace
        from shards.writer import shard_sets_dir

        named = shard_sets_dir(Workspace(resolve_workspace(workspace))) / manifest.name / "manifest.json"
        if named.exists():
            return named
    if not manifest.exists():
        fail(f"no manifest at {manifest}")
    return manifest


def shards_verify(manifest: str = typer.Argument(..., help="A manifest.json (a path or s3://.../manifest.json), or the "
                                                    "name of a shard set of the workspace"),
                  no_decode: bool = typer.Option(False, help="Checksums and counts only"),
                  workspace: WorkspaceOpt = None) -> None:
    """Re-hash every shard (streamed, from a folder or an object store), check sample counts, decode every sample.
    Exit 1 on any problem."""
    from catalog.files import is_remote
    from shards.verify import verify

    where = manifest if is_remote(manifest) else _manifest_path(Path(manifest), workspace)
    try:
        problems = verify(where, decode=not no_decode)
    except FileNotFoundError:
        fail(f"no manifest at {manifest}")
    for p in problems:
        err.print(f"[red]bad shard[/red] {p}")
    if problems:
        raise typer.Exit(1)
    console.print(f"ok: every shard of {str(where).rstrip('/').rsplit('/', 2)[-2]} matches its manifest")


def shards_show(manifest: Path = typer.Argument(..., help="A manifest.json, or the name of a shard set of the workspace"),
                workspace: WorkspaceOpt = None) -> None:
    """Counts by modality, body part, source and split; bytes; query; catalog snapshot."""
    show_manifest(_manifest_path(manifest, workspace))


def show_manifest(path: Path) -> None:
    from shards.manifest import Manifest

    m = Manifest.read(path)
    console.print(f"[bold]{m.name}[/bold]: {m.samples} samples, {len(m.shards)} shards, {m.bytes / 1e6:.1f} MB, "
                  f"created {m.created}, seed {m.seed}")
    console.print(cell(f"query: {m.query}" + ("  (exclusions ignored)" if m.include_excluded else "")))
    console.print(f"catalog snapshot: {m.catalog_snapshot['parts']} parts, last {m.catalog_snapshot['last_part']}")
    r = m.resample
    console.print(f"resolution: longer side at most {r['max_side']} px ({r['images_reduced']} images reduced, "
                  f"smallest factor {r['min_factor']:.3f}, {r['filter']})" if r else "resolution: images as stored")
    console.print(f"codec: {m.codec.get('name')} (.{m.codec.get('ext')}" +
                  (f", {m.codec['encoder']})" if m.codec.get("encoder") else ")"))
    for reason, n in m.unreadable.items():
        console.print(f"left out {n} selected images the store could not give: {reason}")
    if b := m.balance:
        console.print(f"balanced over {b['by']}" + (f" of model {b['model']}" if b.get("model") else "")
                      + f": {b['selected']} of {b['available']} images drawn evenly over {b['groups']} groups "
                      f"(target {b['target']}, seed {b['seed']})"
                      + (f"; drawn from readable images only ({b['unreadable_redrawn']} unreadable drawn again)"
                         if b.get("unreadable_redrawn") else ""))
        tb = Table("group", "available", "drawn", title=f"balance over {b['by']}")
        for g, n in sorted(b["available_counts"].items(), key=lambda kv: -kv[1])[:30]:
            tb.add_row(g, str(n), str(b["counts"].get(g, 0)))
        console.print(tb)
    t = Table("attribute", "value", "samples", title="counts")
    for attr, values in m.counts.items():
        for value, n in values.items():
            t.add_row(*map(cell, (attr, value, n)))
    console.print(t)
