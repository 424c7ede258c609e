import shutil

import pytest

TINY = ["model.name=vit_pico_patch8_dinov3", "head.prototypes=128", "head.ibot_prototypes=128", "head.hidden_dim=64",
        "head.bottleneck_dim=32", "crops.global_size=32", "crops.local_size=16", "crops.local_crops=2",
        "optim.batch_size=8", "optim.warmup_steps=2", "loss.teacher_temp_warmup_steps=2", "train.log_every=1",
        "train.num_workers=0", "train.tensorboard=false", "train.shuffle_buffer=20", "model.drop_path=0.1"]


@pytest.fixture(scope="session")
def tiny_cfg():
    from training.config import load_config

    def make(extra=()):
        return load_config(None, TINY + list(extra))

    return make


@pytest.fixture(scope="session")
def phantom_manifest(tmp_path_factory, phantom_workspace):
    """A shard set over every phantom image (small shards, so readers get several)."""
    from catalog.workspace import Workspace
    from shards.writer import build_shard_set

    src, _ = phantom_workspace
    ws = Workspace.open(tmp_path_factory.mktemp("train") / "workspace")
    shutil.copytree(src.root, ws.root, dirs_exist_ok=True, ignore=shutil.ignore_patterns("shards", "runs"))
    path, manifest, _ = build_shard_set(ws, "all", "SELECT image_id FROM images", samples_per_shard=16)
    assert manifest.samples > 40
    return ws, path
