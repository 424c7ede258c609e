"""The `ortho` command line: the command tree, declared here and only here; the commands live in one module per
group, each imported when its command is first looked up (`ortho sql` imports flows/cli/query.py and what it
needs, not Prefect). Every command runs inside the root group's one error handler (common.OrthoGroup)."""

from __future__ import annotations

import flows  # noqa: F401  (Prefect defaults before Prefect is imported)
import typer

from flows.cli.common import OrthoGroup, lazy_command, lazy_group

# command -> (module in flows/cli, function), in the order `ortho --help` lists them
COMMANDS = {
    "ingest": ("ingest", "ingest"), "curate": ("curate", "curate"), "sql": ("query", "sql"),
    "status": ("query", "status"), "lineage": ("query", "lineage"), "phantom": ("phantom", "phantom"),
    "pretrain": ("pretrain", "pretrain"), "evaluate": ("evaluate", "evaluate"), "report": ("evaluate", "report"),
    "embed": ("embed", "embed"), "cluster": ("embed", "cluster"), "search": ("embed", "search"),
    "pipeline": ("pipeline", "pipeline"), "serve": ("pipeline", "serve"), "demo": ("pipeline", "demo"),
}
GROUPS = {
    "sources": ("Register and list image sources.",
                {"add": ("sources", "sources_add"), "list": ("sources", "sources_list")}),
    "shards": ("Build, list, verify and inspect WebDataset shard sets.",
               {"build": ("shards", "shards_build"), "list": ("shards", "shards_list"),
                "verify": ("shards", "shards_verify"), "show": ("shards", "shards_show")}),
    "tasks": ("Downstream tasks and their labels.", {"list": ("query", "tasks_list")}),
    "export": ("Export de-identified data.", {"dicom": ("export", "export_dicom")}),
    "catalog": ("Catalog maintenance.", {"compact": ("catalog", "catalog_compact")}),
}


class _Root(OrthoGroup):
    loaders = {**{name: lazy_command(name, *where) for name, where in COMMANDS.items()},
               **{name: lazy_group(name, help, commands) for name, (help, commands) in GROUPS.items()}}


def _root() -> None:
    pass  # a group needs a callback when its commands are not registered with typer


app = typer.Typer(cls=_Root, callback=_root, no_args_is_help=True, add_completion=False,
                  help="OrthoFoundation data platform: ingest, catalog, curate, shard, pretrain, evaluate.",
                  pretty_exceptions_show_locals=False)  # a local can hold a path or a value
