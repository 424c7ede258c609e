"""After the whole pipeline (ingest, curate, shards, pretraining, evaluation and its report) and a
de-identified DICOM export, no identifying value planted in the phantom is found anywhere in the
workspace or the export, outside the private lineage table."""

import os

import pytest
import yaml

from catalog.workspace import Workspace
from flows.demo import KL_PATTERN
from ingest.phantom import planted_values, write_phantom
from tests.test_phi import scan_workspace
from tests.training.conftest import TINY


@pytest.mark.prefect
@pytest.mark.slow
@pytest.mark.reliability
def test_no_planted_value_lands_anywhere_after_the_whole_pipeline(tmp_path, prefect_harness):
    from curation.export_dicom import export_selection
    from flows.pipeline import pipeline_flow

    tree = write_phantom(tmp_path / "tree", n_patients=24, hips=True)
    ws = Workspace.open(tmp_path / "workspace")
    ws.secret_path.write_text("ab" * 32)  # fixed pseudonyms: the hashed splits hold every task's parts
    os.chmod(ws.secret_path, 0o600)
    spec = {
        "sources": [{"name": "pacs", "location": str(tree / "pacs"), "kind": "internal", "labels": ["csv:labels.csv"]},
                    {"name": "public", "location": str(tree / "public"), "kind": "public",
                     "labels": ["folder:kl_grade"], "path_pattern": KL_PATTERN, "modality": "DX",
                     "body_part": "knee"}],
        "ingest": {"runner": "threads", "workers": 2},
        "curate": {"runner": "threads", "workers": 2},
        "shards": [{"name": "knees", "query": "SELECT image_id FROM images WHERE body_part = 'knee'",
                    "samples_per_shard": 32}],
        "pretrain": {"name": "p", "shards": "knees", "overrides": TINY + ["train.steps=2"]},
        "evaluate": {"name": "e", "tasks": ["kl_grade", "hip_kl_grade"], "protocols": ["knn", "linear"], "seeds": 1,
                     "baselines": ["random"], "knn_ks": [3], "n_boot": 20},
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(spec))
    results = pipeline_flow(str(ws.root), str(path), show_progress=False)
    assert {r["stage"]: r["status"] for r in results} == {
        "ingest": "done", "curate": "done", "shards:knees": "done", "pretrain": "done", "evaluate": "done"}
    export = ws.root / "exports" / "dicom"
    result = export_selection(ws, "SELECT image_id FROM images WHERE modality IN ('DX', 'CR', 'MR')", export)
    assert len(result.written) > 10
    assert list(ws.evals_dir.glob("e-*/report.html")) and list((ws.root / "shards" / "knees").glob("*.tar"))
    needles = planted_values()
    assert scan_workspace(ws.root, needles) == []
