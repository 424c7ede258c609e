"""An evaluation end to end on a workspace with a known answer: results, catalog rows, report."""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from catalog import db
from catalog.workspace import Workspace
from evaluation.finetune import FinetuneConfig
from evaluation.report import label_efficiency_sentence, write_report
from evaluation.config import EvalConfig
from evaluation.domain import transfer_kind
from evaluation.run import run_evaluation
from evaluation.supervised import SupervisedConfig


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, bars_workspace, pico_checkpoint):
    ws = Workspace.open(tmp_path_factory.mktemp("evaluated") / "workspace")
    shutil.copytree(bars_workspace.root, ws.root, dirs_exist_ok=True)
    cfg = EvalConfig(protocols=["linear", "knn", "finetune"], fractions=[0.5, 1.0], seeds=2,
                     baselines=["random", "supervised", "pixels"], knn_ks=(3, 5), n_boot=100,
                     finetune=FinetuneConfig(epochs=2, batch_size=16),
                     supervised=SupervisedConfig(model="test_resnet", img_size=32, epochs=2, min_steps=0,
                                                 batch_size=16))
    out = run_evaluation(ws, pico_checkpoint, ["kl_grade"], cfg, eval_id="ev1")
    return ws, out, json.loads((out / "metrics.json").read_text())


def test_the_resolved_config_is_saved_beside_the_metrics(evaluated):
    from catalog.config import to_dict
    from evaluation.config import resolve_config

    ws, out, doc = evaluated
    saved = resolve_config(file=out / "config.yaml")
    assert to_dict(saved) == doc["config"] and saved.finetune.epochs == 2 and saved.knn_ks == (3, 5)


def test_every_model_protocol_fraction_and_seed_is_scored_on_the_declared_test_split(evaluated):
    ws, out, doc = evaluated
    (t,) = doc["tasks"]
    assert not t["splits"]["test_from_val"] and t["splits"]["test"]["patients"] == 8
    assert t["splits"]["fit"]["images"] == 48 and t["primary_metric"] == "qwk"
    keys = {(r["model"], r["protocol"], r["fraction"], r["seed"]) for r in doc["results"]}
    expected = {("pretrained", p, 1.0, 0) for p in ("linear", "knn")} | \
        {("pretrained", p, 0.5, s) for p in ("linear", "knn") for s in (0, 1)} | \
        {(m, "finetune", f, s) for m in ("pretrained", "supervised") for f in (0.5, 1.0) for s in (0, 1)} | \
        {("supervised", "train", f, s) for f in (0.5, 1.0) for s in (0, 1)} | \
        {("random", p, f, s) for p in ("linear", "knn") for f in (0.5, 1.0) for s in (0, 1)} | \
        {("pixels", p, 1.0, 0) for p in ("linear", "knn")} | {("pixels", p, 0.5, s) for p in ("linear", "knn")
                                                              for s in (0, 1)} | {("majority", "majority", 1.0, 0)}
    assert keys == expected
    for r in doc["results"]:
        assert r["n_test"] == 16 and r["test_patients"] == 8
        assert sum(map(sum, r["confusion"])) == 16
        for point, lo, hi in r["metrics"].values():
            assert lo - 1e-9 <= point <= hi + 1e-9 or not np.isfinite(point)
        assert r["n_fit"] <= 48 and (r["fraction"] < 1 or r["n_fit"] == 48)
    by = {(r["model"], r["protocol"], r["fraction"], r["seed"]): r for r in doc["results"]}
    # the bar's height is visible in raw pixels and in any ViT's features: near perfect; majority is not
    assert by[("pixels", "knn", 1.0, 0)]["metrics"]["accuracy"][0] >= 0.9
    assert by[("pretrained", "linear", 1.0, 0)]["metrics"]["accuracy"][0] >= 0.9
    assert by[("majority", "majority", 1.0, 0)]["metrics"]["qwk"][0] == 0.0
    assert {"C", "select_score"} <= set(by[("pretrained", "linear", 1.0, 0)]["chosen"])
    assert by[("pretrained", "knn", 1.0, 0)]["chosen"]["k"] in (3, 5)
    for r in doc["results"]:  # every trained model says what it was allowed and used; the frozen ones have none
        b = r.get("budget")
        assert (b is not None) == (r["protocol"] in ("finetune", "train"))
        if r["protocol"] == "train":
            assert r["architecture"] == b["model"] == "test_resnet" and b["img_size"] == 32 and b["epochs"] == 2
            assert 1 <= r["chosen"]["epoch"] <= b["epochs_run"] <= 2 and b["seconds"] > 0 and b["params"] > 1000
        elif b:
            assert b["model"] == "vit_pico_patch8_dinov3" and b["img_size"] == 32
    assert len(doc["retrieval"]) == 5 and all(len(q["neighbours"]) == 5 for q in doc["retrieval"])
    assert [q["label"] for q in doc["retrieval"][:3]] == ["0", "1", "2"]  # one query per class first


def test_results_land_in_the_evals_view_and_a_rerun_replaces_them(evaluated, pico_checkpoint):
    ws, out, doc = evaluated
    con = db.connect(ws)
    try:
        rows = con.execute("SELECT model, protocol, fraction, seed, qwk, qwk_lo, qwk_hi, auroc, transfer, "
                           "task_domain, checkpoint_sha256 FROM evals WHERE task = 'kl_grade'").fetchall()
    finally:
        con.close()
    assert len(rows) == len(doc["results"])
    pre = [r for r in rows if r[0] == "pretrained"]
    assert all(r[7] is None for r in rows)  # AUROC is for binary tasks
    assert all(r[5] <= r[4] <= r[6] for r in rows if r[4] is not None and r[5] is not None)
    assert all(r[8] == "unknown" and r[9] == "knee/X-ray" and len(r[10]) == 64 for r in pre)
    small = EvalConfig(protocols=["knn"], seeds=1, baselines=[], n_boot=10)
    for _ in range(2):
        run_evaluation(ws, pico_checkpoint, ["kl_grade"], small, eval_id="ev2")
    counts = dict(db.query(ws, "SELECT eval_id, count(*) FROM evals GROUP BY ALL")[1])
    assert counts == {"ev1": len(doc["results"]), "ev2": 2}  # knn + majority, replaced by the re-run


def test_transfer_is_named_from_what_the_run_was_pretrained_on():
    knee_xray = {"body_part": ["knee"], "modality": ["DX"]}
    assert transfer_kind(knee_xray, ["knee"], ["CR"]) == "in-domain"  # CR and DX are both X-ray
    assert transfer_kind(knee_xray, ["hip"], ["DX"]) == "cross-anatomy"
    assert transfer_kind(knee_xray, ["knee"], ["MR"]) == "cross-modality"
    assert transfer_kind(knee_xray, ["shoulder"], ["MR"]) == "cross-anatomy+modality"
    assert transfer_kind({}, ["knee"], ["MR"]) == "unknown"


def test_the_report_is_self_contained_and_answers_the_label_efficiency_question(evaluated):
    ws, out, doc = evaluated
    page = write_report(out, ws).read_text()
    assert "<img" in page and 'src="data:image/png;base64,' in page and "http" not in page.replace(
        "http-equiv", "")
    assert "kl_grade" in page and "pretrained" in page and "supervised" in page
    for name in ("label_efficiency_kl_grade.png", "confusion_kl_grade.png", "retrieval.png"):
        assert (out / name).stat().st_size > 1000
    from evaluation.report import group_results

    sentence = label_efficiency_sentence(group_results(doc["results"], "kl_grade"), "qwk")
    assert "supervised baseline" in sentence and sentence in page.replace("&#x27;", "'")
    assert "supervised · train: test_resnet" in page and "supervised CNN test_resnet at 32 px" in page


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def test_the_report_renders_in_a_headless_browser(evaluated, tmp_path):
    browser = _chromium()
    if not browser:
        pytest.skip("no Chromium on this machine (apt-get install chromium)")
    ws, out, doc = evaluated
    page = write_report(out, ws)
    args = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*args, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert "<table" in dom and "kl_grade" in dom and dom.count("<img") >= 3
    shot = tmp_path / "shot.png"
    subprocess.run([*args, f"--screenshot={shot}", "--window-size=1200,1600", page.as_uri()],
                   capture_output=True, timeout=120)
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.std() > 10  # text, tables and plots drawn, not a blank page


def test_a_shard_set_gives_the_same_results_as_the_catalog(evaluated, pico_checkpoint):
    from shards.spec import ShardSetSpec
    from shards.writer import build_shard_set

    ws, _, doc = evaluated
    path, manifest, _ = build_shard_set(ws, ShardSetSpec("bars-eval", "SELECT image_id FROM images", target_size="1MB", evaluation=True))
    from catalog.store import ImageStore
    from evaluation.data import ShardImages

    shard_images, store = ShardImages(path), ImageStore(ws.store_dir)
    assert len(shard_images.pixels) == manifest.samples == 80
    assert all(np.array_equal(px, store.get(i)) for i, px in shard_images.pixels.items())
    cfg = EvalConfig(protocols=["knn", "linear"], seeds=1, baselines=["pixels"], knn_ks=(3, 5), n_boot=100)
    a = json.loads((run_evaluation(ws, pico_checkpoint, ["kl_grade"], cfg, eval_id="a") / "metrics.json").read_text())
    b = json.loads((run_evaluation(ws, pico_checkpoint, ["kl_grade"], cfg, eval_id="b", shards=path)
                    / "metrics.json").read_text())
    assert b["data"]["shards"] == str(path.absolute()) and a["data"]["shards"] is None
    assert a["tasks"][0]["splits"] == b["tasks"][0]["splits"]
    for ra, rb in zip(a["results"], b["results"]):
        assert (ra["model"], ra["protocol"]) == (rb["model"], rb["protocol"])
        assert ra["metrics"] == rb["metrics"] and ra["confusion"] == rb["confusion"]
    assert a["retrieval"] == b["retrieval"]


def test_a_local_checkpoint_is_a_baseline_side_by_side(evaluated, pico_checkpoint, tmp_path):
    import torch

    from training.backbone import build_backbone, export_backbone

    ws, _, _ = evaluated
    torch.manual_seed(7)
    model, spec, _ = build_backbone("vit_pico_patch8_dinov3", img_size=32)
    other = export_backbone(model, spec, tmp_path / "dinov3-like.safetensors")
    # a plain timm state dict (no spec inside) needs its architecture: ARCH=PATH
    from safetensors.torch import save_file

    bare = tmp_path / "bare.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(bare))
    cfg = EvalConfig(protocols=["knn"], seeds=1, baselines=[str(other), f"vit_pico_patch8_dinov3={bare}"],
                     knn_ks=(3,), n_boot=20)
    doc = json.loads((run_evaluation(ws, pico_checkpoint, ["kl_grade"], cfg, eval_id="side") / "metrics.json")
                     .read_text())
    by_model = {r["model"]: r for r in doc["results"]}
    assert {"pretrained", "dinov3-like", "bare", "majority"} == set(by_model)
    assert by_model["dinov3-like"]["checkpoint"].endswith("dinov3-like.safetensors")
    assert by_model["bare"]["architecture"] == "vit_pico_patch8_dinov3"
    # the same weights give the same predictions whichever way they were stored
    assert by_model["dinov3-like"]["confusion"] == by_model["bare"]["confusion"]


def test_the_flow_renders_the_report_from_the_workspace_it_was_given(evaluated):
    """A flow's parameters are text: the report task opens the workspace from a str and finds its thumbnails."""
    from flows.evaluate import report_task

    ws, out, _ = evaluated
    page = Path(report_task.fn(str(out), str(ws.root))).read_text()
    assert "retrieval examples" in page and (out / "retrieval.png").stat().st_size > 1000
