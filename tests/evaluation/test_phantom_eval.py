"""Evaluation on the phantom with its second anatomy: cross-anatomy is named from what the run saw,
and no planted identifying value reaches metrics.json, the report, its plots or the evals rows."""

import json
import os

import pytest

from catalog.workspace import Workspace
from evaluation.report import write_report
from evaluation.config import EvalConfig
from evaluation.run import run_evaluation
from flows.phantom import planted_values, write_phantom
from tests.phi_scan import scan_workspace


@pytest.mark.slow
def test_a_knee_run_on_hip_grades_is_cross_anatomy_and_the_report_holds_no_phi(tmp_path, pico_checkpoint):
    from curation.run import curate
    from flows.demo import KL_PATTERN
    from ingest.run import ingest_source
    from ingest.sources import Source, add_source

    tree = write_phantom(tmp_path / "tree", n_patients=12, hips=True)
    assert len(list((tree / "pacs").rglob("*_hip_*.dcm"))) == 12
    ws = Workspace.open(tmp_path / "workspace")
    ws.secret_path.write_text("ab" * 32)  # a fixed pseudonym key: the hashed splits are the same every run
    os.chmod(ws.secret_path, 0o600)
    add_source(ws, Source("pacs", str(tree / "pacs"), "internal", labels=["csv:labels.csv"]))
    add_source(ws, Source("public", str(tree / "public"), "public", labels=["folder:kl_grade"],
                          path_pattern=KL_PATTERN, modality="DX", body_part="knee"))
    ingest_source(ws, "pacs")
    ingest_source(ws, "public")
    curate(ws)
    # the checkpoint "was pretrained" on knee radiographs: a run.json beside it says so
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "backbone.safetensors").write_bytes(pico_checkpoint.read_bytes())
    (run_dir / "backbone.json").write_text(pico_checkpoint.with_suffix(".json").read_text())
    (run_dir / "run.json").write_text(json.dumps({"run_id": "r1", "shard_set": "knees",
                                                  "counts": {"body_part": {"knee": 9}, "modality": {"DX": 9}}}))
    cfg = EvalConfig(protocols=["knn", "linear"], seeds=1, baselines=["random"], knn_ks=(3,), n_boot=50)
    out = run_evaluation(ws, run_dir, ["kl_grade", "hip_kl_grade", "mri_acl"], cfg, eval_id="phantom")
    doc = json.loads((out / "metrics.json").read_text())
    domains = {t["task"]: t["domain"] for t in doc["tasks"]}
    assert domains == {"kl_grade": "knee/X-ray", "hip_kl_grade": "hip/X-ray", "mri_acl": "knee/MR"}
    transfer = {r["task"]: r["transfer"] for r in doc["results"] if r["model"] == "pretrained"}
    assert transfer == {"kl_grade": "in-domain", "hip_kl_grade": "cross-anatomy", "mri_acl": "cross-modality"}
    assert doc["checkpoint"]["pretrained_on"]["body_part"] == ["knee"]
    write_report(out, ws)
    assert "cross-anatomy" in (out / "report.html").read_text()
    assert scan_workspace(ws.root, planted_values()) == []
