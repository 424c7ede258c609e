"""A small labelled workspace with a known answer: three classes drawn as a bright bar at three
heights, 40 patients (two knees each) in declared train/val/test folders."""

import pytest

from tests.evaluation.bars import write_bars


@pytest.fixture(scope="session")
def bars_workspace(tmp_path_factory):
    """Ingested (serially) and curated once; tests copy it when they write."""
    from catalog.workspace import Workspace
    from curation.run import curate
    from flows.demo import KL_PATTERN
    from ingest.run import ingest_source
    from ingest.sources import Source, add_source

    root = write_bars(tmp_path_factory.mktemp("bars") / "tree")
    ws = Workspace.open(tmp_path_factory.mktemp("bars-ws") / "workspace")
    add_source(ws, Source("bars", str(root), "public", labels=["folder:kl_grade"], path_pattern=KL_PATTERN,
                          modality="DX", body_part="knee"))
    ingest_source(ws, "bars")
    curate(ws)
    return ws


@pytest.fixture(scope="session")
def pico_checkpoint(tmp_path_factory):
    """A randomly initialised pico ViT exported as a run would export it (32 px)."""
    import torch

    from training.backbone import build_backbone, export_backbone

    torch.manual_seed(0)
    model, spec, _ = build_backbone("vit_pico_patch8_dinov3", img_size=32)
    return export_backbone(model, spec, tmp_path_factory.mktemp("ckpt") / "backbone.safetensors")
