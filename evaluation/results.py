"""Where an evaluation's results go: evals/<eval_id>/metrics.json with the resolved config.yaml beside it, and
one catalog row per result (the `evals` view) in one atomic file per evaluation."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np

from catalog import config as loader
from catalog import schema
from catalog.files import atomic_write
from catalog.parts import write_table
from catalog.workspace import Workspace
from evaluation.backbones import Backbone
from evaluation.config import EvalConfig


def metrics_doc(eval_id: str, main: Backbone, cfg: EvalConfig, shards: str | None, task_info: list[dict],
                results: list[dict], retrieval: list[dict], seconds: float) -> dict:
    """The content of metrics.json."""
    return {"eval_id": eval_id, "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "checkpoint": {"path": main.path, "sha256": main.sha256, "architecture": main.spec.name,
                           "img_size": main.spec.img_size, "pretrained_on": main.pretrained_on},
            "data": {"shards": str(Path(shards).absolute()) if shards else None},
            "baselines": cfg.baselines, "config": loader.to_dict(cfg), "tasks": task_info,
            "results": results, "retrieval": retrieval, "seconds": round(seconds, 1)}


def write_results(ws: Workspace, doc: dict, cfg: EvalConfig) -> Path:
    """config.yaml, then metrics.json (its presence says the evaluation finished), then the catalog rows."""
    out = ws.evals_dir / doc["eval_id"]
    out.mkdir(parents=True, exist_ok=True)
    loader.save_resolved(cfg, out / "config.yaml")
    atomic_write(out / "metrics.json", json.dumps(doc, indent=1, default=_json_default))
    record_results(ws, doc)
    return out


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o).__name__)


def record_results(ws: Workspace, doc: dict) -> Path:
    """One `evals` row per result, written in one atomic file per evaluation."""
    now = dt.datetime.now(dt.timezone.utc)
    domains = {t["task"]: t["domain"] for t in doc["tasks"]}
    rows = []
    for r in doc["results"]:
        row = {k: r.get(k) for k in ("task", "model", "protocol", "fraction", "seed", "checkpoint",
                                      "checkpoint_sha256", "architecture", "pretrained_on", "transfer",
                                      "n_fit", "n_test", "test_patients")}
        row.update(eval_id=doc["eval_id"], task_domain=domains.get(r["task"]), recorded_at=now,
                   chosen=json.dumps(r.get("chosen"), default=_json_default))
        for m in schema.EVAL_METRICS:
            point, lo, hi = r["metrics"].get(m, (None, None, None))
            row[m], row[f"{m}_lo"], row[f"{m}_hi"] = (None if v is None or not np.isfinite(v) else float(v)
                                                      for v in (point, lo, hi))
        rows.append(row)
    path = ws.evals_catalog_dir / f"{doc['eval_id']}.parquet"
    write_table(path, rows, schema.EVAL, ws.staging_dir)
    return path
