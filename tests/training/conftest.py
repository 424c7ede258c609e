import shutil

import pytest

from tests.training.tiny import TINY


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
    from shards.spec import ShardSetSpec
    from shards.writer import build_shard_set

    src, _ = phantom_workspace
    ws = Workspace.open(tmp_path_factory.mktemp("train") / "workspace")
    shutil.copytree(src.root, ws.root, dirs_exist_ok=True, ignore=shutil.ignore_patterns("shards", "runs"))
    path, manifest, _ = build_shard_set(ws, ShardSetSpec("all", "SELECT image_id FROM images", samples_per_shard=16))
    assert manifest.samples > 40
    return ws, path
