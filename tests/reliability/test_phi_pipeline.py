"""After the whole pipeline (ingest, curate and its report, shards, pretraining, evaluation and its report) and a
de-identified DICOM export, no identifying value planted in the phantom is found anywhere in the
workspace or the export, outside the private lineage table, nor in Prefect's database; and the
names and IDs burned into the phantom's pixels read nowhere: not in the store, the shards or the
exported DICOM."""

import os
import re

import pytest
import yaml

from catalog.workspace import Workspace
from flows.demo import KL_PATTERN
from flows.phantom import planted_values, write_phantom
from tests.phi_scan import database_hits, prefect_database, scan_workspace
from tests.training.tiny import TINY


PATIENTS = 12  # with the fixed secret below, each task's patients land in all three splits


@pytest.mark.prefect
@pytest.mark.slow
def test_no_planted_value_lands_anywhere_after_the_whole_pipeline(tmp_path, prefect_harness):
    from curation.export_dicom import export_selection
    from flows.pipeline import pipeline_flow

    tree = write_phantom(tmp_path / "tree", n_patients=PATIENTS, hips=True)
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
    curated = next(r for r in results if r["stage"] == "curate")
    assert curated["report"] and list((ws.root / "reports").glob("curation-*.html"))  # scanned below with the rest
    needles = planted_values(PATIENTS)
    assert scan_workspace(ws.root, needles) == []
    assert database_hits(prefect_database(), "|".join(re.escape(n) for n in needles)) == []
    assert burned_tokens_read(ws, export) == []


def burned_tokens_read(ws, export) -> list[str]:
    """OCR of every stored image that was cleaned; its shard samples hold the same PNG bytes and its
    exported DICOM the same pixels (checked here), so they read no more than the store does."""
    import tarfile

    import numpy as np
    import pydicom

    from catalog import db
    from catalog.store import ImageStore
    from flows.phantom import burned_lines, has_burned_text, patients
    from tests import ocr_judge as judge

    tokens = [t for p in patients(PATIENTS) if has_burned_text(p) for line in burned_lines(p) for t in line.replace("^", " ").split()]
    con = db.connect(ws)
    rows = con.execute("SELECT image_id, file_id FROM images WHERE pixels_cleaned").fetchall()
    con.close()
    cleaned, cleaned_files = {r[0] for r in rows}, {r[1] for r in rows}
    assert len(cleaned) == 3 * sum(has_burned_text(p) for p in patients(PATIENTS))
    store = ImageStore(ws.store_dir)
    for tar in (ws.root / "shards" / "knees").glob("*.tar"):
        with tarfile.open(tar) as t:
            for m in t.getmembers():
                if m.name.endswith(".png") and m.name.split(".")[0] in cleaned:
                    assert t.extractfile(m).read() == store.path(m.name.split(".")[0]).read_bytes()
    stored = [store.get(i) for i in sorted(cleaned)]
    mine = [pydicom.dcmread(f) for f in export.rglob("*.dcm") if f.stem in cleaned_files]
    assert mine and all(ds.BurnedInAnnotation == "NO" for ds in mine)
    assert all(any(np.array_equal(ds.pixel_array, px) for px in stored) for ds in mine)
    text = "\n".join(judge.read_text_rapidocr(px) + (judge.read_text(px) if judge.available() else "") for px in stored)
    return [t for t in tokens if judge.readable(t, text)]
