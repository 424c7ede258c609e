"""The `ortho` command line: the command tree, declared here and only here; the commands live in one module per
group. Every command runs inside the root group's one error handler (common.OrthoGroup)."""

from __future__ import annotations

import flows  # noqa: F401  (Prefect defaults before Prefect is imported)
import typer

from flows.cli import catalog, curate, evaluate, export, ingest, pipeline, pretrain, query, shards, sources
from flows.cli.common import OrthoGroup

app = typer.Typer(cls=OrthoGroup, no_args_is_help=True, add_completion=False,
                  help="OrthoFoundation data platform: ingest, catalog, curate, shard, pretrain, evaluate.",
                  pretty_exceptions_show_locals=False)  # a local can hold a path or a value


def _group(name: str, help: str, commands: dict) -> None:
    sub = typer.Typer(help=help, no_args_is_help=True)
    for command, fn in commands.items():
        sub.command(command)(fn)
    app.add_typer(sub, name=name)


_group("sources", "Register and list image sources.", {"add": sources.sources_add, "list": sources.sources_list})
_group("shards", "Build, list, verify and inspect WebDataset shard sets.",
       {"build": shards.shards_build, "list": shards.shards_list, "verify": shards.shards_verify,
        "show": shards.shards_show})
_group("tasks", "Downstream tasks and their labels.", {"list": query.tasks_list})
_group("export", "Export de-identified data.", {"dicom": export.export_dicom})
_group("catalog", "Catalog maintenance.", {"compact": catalog.catalog_compact})
for fn in (ingest.ingest, curate.curate, query.sql, query.status, query.lineage, pipeline.phantom, pretrain.pretrain,
           evaluate.evaluate, evaluate.report, pipeline.pipeline, pipeline.serve, pipeline.demo):
    app.command()(fn)
