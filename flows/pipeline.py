"""The whole pipeline as one Prefect flow: sources -> ingest -> curate -> shards -> pretrain -> evaluate.

    ortho pipeline configs/pipelines/demo.yaml

A pipeline file (YAML) names every stage's settings (see docs/pipeline.md). Each stage runs as a
subflow of the parent `pipeline` flow and is skipped, saying so, when its inputs have not changed:

  ingest    incremental by construction: only new or changed files are read ("up to date" when none)
  curate    skipped when the catalog snapshot and the settings are the ones it last curated
  shards    a shard set whose selection is unchanged is found up to date, not rewritten
  pretrain  the run folder is named by its inputs (shard manifest sha256 + resolved config); a finished
            one is skipped, an unfinished one resumed
  evaluate  the evaluation id is named by its inputs (checkpoint sha256, settings, labels and splits);
            one already written is skipped

A stage that fails stops the stages that depend on it (shards -> pretrain -> evaluate) and leaves
every other result in place; the summary says which failed and why, and the exit status is 1.

Each stage's result holds its wall seconds, and the flow's run logger says one line per stage (its name, status
and seconds; never its detail, which may hold a path) and the total, so a served nightly run shows in its Prefect
logs where its time went.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import flows  # noqa: F401  (Prefect defaults)
from prefect import flow, get_run_logger

from catalog.files import atomic_write, is_remote
from catalog.workspace import Workspace
from flows.firewall import firewall, frames_only, one_line
from flows.pipeline_file import Pipeline, PipelineError, SourceEntry
from shards.spec import ShardSetSpec

def scrub_paths(text: str, ws: Workspace) -> str:
    """Paths under a registered source may name a patient: an error message or traceback written by
    the pipeline keeps none of them (the file id and `ortho lineage` say where a file came from)."""
    import re

    from ingest.sources import load_sources

    for src in load_sources(ws).values():
        if src.location:
            text = re.sub(re.escape(src.location.rstrip("/")) + r"[^\s'\"]*", f"<a path under source {src.name}>", text)
    return text


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _state(ws: Workspace) -> dict:
    path = ws.pipeline_state_path
    return json.loads(path.read_text()) if path.is_file() else {}


def _save_state(ws: Workspace, state: dict) -> None:
    path = ws.pipeline_state_path
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(state, indent=2))


def register_sources(ws: Workspace, spec: Pipeline) -> tuple[list[str], list[str]]:
    """Register (or update) the file's sources; returns (names, notes about sources left out)."""
    from ingest.sources import add_source, load_sources

    names, notes = [], []
    known = load_sources(ws)
    for s in spec.sources:
        location = spec.resolve(s.location)
        if location is None:
            notes.append(f"source {s.name}: {s.location} is not installed here; left out")
            continue
        where = s.location if is_remote(s.location) else str(location)  # a Path folds s3:// to s3:/
        add_source(ws, _source(s, where), replace=s.name in known)
        names.append(s.name)
    return names, notes


def _source(s: SourceEntry, location: str):
    from ingest.sources import Source

    return Source(s.name, location, s.kind, labels=list(s.labels), path_pattern=s.path_pattern, modality=s.modality,
                  body_part=s.body_part, slice_axis=s.slice_axis, burned_in=s.burned_in, credentials=s.credentials)


STAGES = ("phantom", "ingest", "curate", "shards", "pretrain", "evaluate")


@dataclass
class StageResult:
    stage: str
    status: str  # done | up to date | failed | blocked | not configured
    detail: str = ""
    seconds: float = 0.0  # wall clock, the stage's own subflows included; 0 for a blocked stage


@dataclass
class PipelineRun:
    """One run of a pipeline file: what the stages read (workspace, file, saved state) and what they hand on."""

    ws: Workspace
    spec: Pipeline
    wanted: set[str]
    show_progress: bool = True
    state: dict = field(default_factory=dict)  # pipeline/state.json: what curate last ran on
    results: list[StageResult] = field(default_factory=list)
    failed: set[str] = field(default_factory=set)
    sources: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # sources left out
    manifests: dict[str, str] = field(default_factory=dict)  # shard set name -> manifest path
    checkpoint: str | None = None
    curate_summary: dict = field(default_factory=dict)  # printed after the stage table
    curation_report: str | None = None  # the current curation run's report (curation/report.py)
    report: str | None = None
    log: logging.Logger | logging.LoggerAdapter = field(default_factory=lambda: logging.getLogger("ortho.pipeline"))
    started: float = field(default_factory=time.perf_counter)

    def stage(self, name: str, needs: tuple[str, ...], fn, *args) -> None:
        """Run `fn(self, *args) -> (status, detail)` unless unwanted or blocked; a failure is recorded, not
        raised: its dependents stop, the others go on."""
        if name.split(":")[0] not in self.wanted:
            return
        blocked = [n for n in needs if n in self.failed]
        if blocked:
            self.failed.add(name)
            self._record(StageResult(name, "blocked", f"{blocked[0]} failed"))
            return
        start = time.perf_counter()
        try:
            status, detail = fn(self, *args)
        except Exception as e:  # only curated errors keep their text (docs/catalog.md, the failure firewall)
            self.failed.add(name)
            self._record(StageResult(name, "failed", scrub_paths(one_line(e), self.ws), _since(start)))
            with self.ws.log_path("pipeline-errors").open("a") as log:
                log.write(f"--- {name}\n{scrub_paths(frames_only(e), self.ws)}\n")
            return
        self._record(StageResult(name, status, detail, _since(start)))

    def _record(self, result: StageResult) -> None:
        self.results.append(result)
        self.log.info("stage %s: %s in %.1f s", result.stage, result.status, result.seconds)

    def log_total(self) -> None:
        """The run's wall seconds: the stages and what lies between them (registering the sources)."""
        counts = Counter(r.status for r in self.results)
        self.log.info("pipeline: %d stages in %.1f s (%s)", len(self.results), _since(self.started),
                      ", ".join(f"{n} {status}" for status, n in counts.items()) or "none run")

    def outputs(self) -> list[dict]:
        extra = {"evaluate": {"report": self.report}, "curate": {"summary": self.curate_summary or None,
                                                                     "report": self.curation_report}}
        return [r.__dict__ | extra.get(r.stage, {}) for r in self.results]


def _since(start: float) -> float:
    return round(time.perf_counter() - start, 3)


def phantom_stage(run: PipelineRun) -> tuple[str, str]:
    from flows.phantom import MARKER, write_phantom

    p = run.spec.phantom
    root = run.spec.resolve(p.root)
    before = (root / MARKER).read_text() if (root / MARKER).exists() else None
    write_phantom(root, seed=p.seed, n_patients=p.patients, hips=p.hips, poses=p.poses)
    same = before is not None and before == (root / MARKER).read_text()
    return ("up to date" if same else "done"), f"{root} ({(root / MARKER).read_text().strip()})"


def ingest_stage(run: PipelineRun) -> tuple[str, str]:
    from flows.ingest import ingest_flow

    if not run.sources:
        return "not configured", "no sources"
    out = ingest_flow(str(run.ws.root), run.sources, run.spec.ingest, run.spec.ingest_runner)
    new = sum(r["files_processed"] for r in out)
    cleaned = sum(r.get("text_cleaned", 0) for r in out)
    detail = f"{new} new or changed files of {sum(r['files_seen'] for r in out)}, " \
             f"{sum(r['images'] for r in out)} images, {cleaned} with burned-in text masked" + \
             ("; " + "; ".join(run.notes) if run.notes else "")
    return ("done" if new else "up to date"), detail


def curate_stage(run: PipelineRun) -> tuple[str, str]:
    from flows.curate import curate_config, run_curate
    from shards.select import catalog_snapshot

    settings = dict(run.spec.raw.get("curate") or {})  # as written: what the last curation's digest holds
    if run.state.get("curate") == _digest({"catalog": catalog_snapshot(run.ws), "settings": settings}):
        return "up to date", "catalog unchanged since the last curation" + _curation_report(run)
    stage = run.spec.curate
    s = run_curate(str(run.ws.root), curate_config(list(stage.overrides), stage.crops), run.spec.curate_runner)
    run.curate_summary.update(s)
    run.state["curate"] = _digest({"catalog": catalog_snapshot(run.ws), "settings": settings})
    _save_state(run.ws, run.state)
    return "done", f"{s['images']} images, {s['excluded']} excluded, {s['leakage_removed']} removed by the " \
                   "leakage guard" + _curation_report(run)


def _curation_report(run: PipelineRun) -> str:
    """Writes the current curation run's report unless written already (sampled: a few seconds at most); a failure
    to write it is logged and noted in the stage's detail, and stops nothing."""
    from curation.report import curation_runs, report_path, write_curation_report

    runs = curation_runs(run.ws)
    if not runs:
        return ""
    path = report_path(run.ws, runs[-1])
    try:
        if not path.is_file():
            write_curation_report(run.ws, runs[-1])
    except Exception as e:
        with run.ws.log_path("pipeline-errors").open("a") as log:
            log.write(f"--- curation report\n{scrub_paths(frames_only(e), run.ws)}\n")
        return f"; the curation report failed ({scrub_paths(one_line(e), run.ws)})"
    run.curation_report = str(path)
    return ""


def shards_stage(run: PipelineRun, sel: ShardSetSpec) -> tuple[str, str]:
    from flows.shards import run_build

    r = run_build(str(run.ws.root), sel, overwrite=True)
    run.manifests[sel.name] = r["manifest"]
    return ("done" if r["built"] else "up to date"), f"{r['samples']} samples in {r['shards']} shards"


def pretrain_stage(run: PipelineRun) -> tuple[str, str]:
    """The run folder is named by its inputs: a finished one is skipped, an unfinished one resumed."""
    from flows.pretrain import pretrain_flow
    from training.data import TrainingError, check_manifest

    pre, cfg = run.spec.pretrain, run.spec.pretrain_config
    manifest = run.manifests[pre.shards]
    key = _digest({"manifest": check_manifest(manifest, verify=False).sha256, "config": cfg.to_dict()})[:10]
    run_dir = run.ws.train_runs_dir / f"{pre.name}-{key}"
    run.checkpoint = str(run_dir / "backbone.safetensors")
    if (run_dir / "backbone.safetensors").is_file():
        return "up to date", f"{run_dir.name}: same shards and config already trained"
    resume = (run_dir / "run.json").is_file()
    s = pretrain_flow(str(run.ws.root), manifest=None if resume else manifest,
                      config=None if resume else pre.config,
                      overrides=[] if resume else list(pre.overrides),
                      settings=None if resume else run.spec.pretrain_settings(),
                      resume=str(run_dir) if resume else None, run_dir=str(run_dir), show_progress=run.show_progress)
    if not s.get("completed"):
        raise TrainingError(f"run {run_dir.name} stopped at step {s.get('steps')}")
    return "done", f"{run_dir.name}: {s.get('steps')} steps{' (resumed)' if resume else ''}, " \
                   f"loss {s.get('loss', float('nan')):.3f}"


def evaluate_stage(run: PipelineRun) -> tuple[str, str]:
    """The evaluation id is named by its inputs (checkpoint, settings, labels, splits): one written is skipped."""
    from catalog import db
    from catalog.files import file_sha256
    from flows.evaluate import evaluate_flow

    settings = run.spec.evaluate_settings()  # as written (checked when the file was read): they name the evaluation
    name, tasks, overrides = run.spec.evaluate.name, list(run.spec.evaluate.tasks), list(run.spec.evaluate.overrides)
    if run.checkpoint is None:
        raise PipelineError("evaluate needs the pretrain stage of the same run (its checkpoint)")
    labels = db.query(run.ws, "SELECT l.task, count(*), count(DISTINCT i.split) FROM labels l JOIN images i "
                              "USING (image_id) GROUP BY ALL ORDER BY ALL")[1]
    splits = db.query(run.ws, "SELECT count(*), count(DISTINCT patient_key) FROM splits")[1]
    inputs = {"checkpoint": file_sha256(Path(run.checkpoint)), "tasks": tasks, "settings": settings,
              "labels": labels, "splits": splits}
    key = _digest(inputs | ({"overrides": overrides} if overrides else {}))[:10]  # ids of older runs stay valid
    eval_id = f"{name}-{key}"
    out = run.ws.evals_dir / eval_id
    run.report = str(out / "report.html")
    if (out / "metrics.json").is_file() and (out / "report.html").is_file():
        return "up to date", f"{eval_id}: this checkpoint, these tasks and labels already evaluated"
    r = evaluate_flow(str(run.ws.root), run.checkpoint, tasks, run.spec.evaluate_config, eval_id=eval_id)
    return "done", f"{eval_id}: {', '.join(tasks)}; report {r['report']}"


@flow(name="pipeline", log_prints=False)
@firewall("pipeline")
def pipeline_flow(workspace: str, pipeline_file: str, show_progress: bool = True,
                  stages: list[str] | None = None) -> list[dict]:
    """Every stage of the pipeline file (or only `stages`), in order, each a subflow; returns one
    result per stage. The file is read at each run, so a scheduled deployment picks up its edits."""
    wanted = set(stages or STAGES)
    unknown = wanted - set(STAGES)
    if unknown:
        raise PipelineError(f"unknown stage {sorted(unknown)[0]!r}: choose from {', '.join(STAGES)}")
    spec = Pipeline.load(pipeline_file)
    ws = Workspace.open(workspace)
    run = PipelineRun(ws, spec, wanted, show_progress, state=_state(ws), log=get_run_logger())
    if spec.phantom:
        run.stage("phantom", (), phantom_stage)
    run.sources, run.notes = register_sources(ws, spec)
    run.stage("ingest", ("phantom",), ingest_stage)
    run.stage("curate", ("ingest",), curate_stage)
    for sel in spec.shards:
        run.stage(f"shards:{sel.name}", ("curate",), shards_stage, sel)
    if spec.pretrain:
        run.stage("pretrain", (f"shards:{spec.pretrain.shards}",), pretrain_stage)
    if spec.evaluate:
        run.stage("evaluate", ("pretrain",), evaluate_stage)
    run.log_total()
    return run.outputs()
