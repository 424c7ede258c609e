"""`ortho catalog compact`."""

from __future__ import annotations

from flows.cli.common import WorkspaceOpt, console, open_workspace, wait_option


def catalog_compact(wait: float = wait_option(), workspace: WorkspaceOpt = None) -> None:
    """Merge the small per-batch catalog parts into one (ingest does this itself past 256 parts)."""
    from catalog.compact import compact

    before, after = compact(open_workspace(workspace), wait_s=wait)
    console.print(f"catalog parts: {before} -> {after}")
