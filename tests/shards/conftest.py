import pytest


@pytest.fixture
def shard_ws(phantom_workspace, tmp_path):
    """A private copy of the phantom workspace, so shard sets do not leak between tests."""
    import shutil

    from catalog.workspace import Workspace

    ws, _ = phantom_workspace
    root = tmp_path / "ws"
    shutil.copytree(ws.root, root, ignore=shutil.ignore_patterns("shards"))
    return Workspace.open(root)
