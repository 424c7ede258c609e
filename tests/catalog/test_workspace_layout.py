"""The workspace's layout has one home: catalog/workspace.py names every room, and its docstring draws them all.
Elsewhere, package code asks `Workspace` for a room; it never joins a room's name onto the workspace root or onto
another of the workspace's rooms (`ws.root / "shards"`, `ws.private_dir / "credentials"`)."""

import ast
import inspect
from pathlib import Path

from catalog import workspace
from catalog.workspace import Workspace

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("catalog", "ingest", "curation", "shards", "training", "evaluation", "flows")
_WORKSPACE_TREE = ast.parse(inspect.getsource(workspace))


def _literal(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def layout_names() -> set[str]:
    """The names catalog/workspace.py joins onto the root or its rooms: `"shards"`, `"secret.key"`, ..."""
    return {_literal(n.right) for n in ast.walk(_WORKSPACE_TREE)
            if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Div) and _literal(n.right)}


def room_names() -> set[str]:
    """What `Workspace` answers with a path: `root` and each of its properties and methods."""
    cls = next(n for n in _WORKSPACE_TREE.body if isinstance(n, ast.ClassDef) and n.name == "Workspace")
    return {"root"} | {f.name for f in cls.body if isinstance(f, ast.FunctionDef)}


def _names_a_workspace_folder(node: ast.AST, rooms: set[str]) -> bool:
    """`ws.root`, `self.ws.private_dir`, `ws_root`, `workspace`: an expression that stands for a workspace folder."""
    last = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else None
    if isinstance(node, ast.Call):  # Path(workspace), Workspace.open(x).root
        return any(_names_a_workspace_folder(a, rooms) for a in node.args)
    return last is not None and (last in rooms or "workspace" in last or last in ("ws", "ws_root"))


def layout_joins(source: str, names: set[str], rooms: set[str]) -> list[str]:
    """Lines that join one of the layout's names onto a workspace folder, by `/`, os.path.join or joinpath."""
    found = []
    for node in ast.walk(ast.parse(source)):
        pairs = []
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            pairs = [(node.left, node.right)]
        elif isinstance(node, ast.Call) and ast.unparse(node.func).endswith(("os.path.join", "joinpath")):
            base = node.func.value if ast.unparse(node.func).endswith("joinpath") else node.args[0]
            pairs = [(base, a) for a in node.args[0 if base is not node.args[0] else 1:]]
        for left, right in pairs:
            name = (_literal(right) or "").strip("/").split("/")[0]
            if name in names and _names_a_workspace_folder(left, rooms):
                found.append((node.lineno, f"{node.lineno}: {ast.unparse(node)}"))
    return [line for _, line in sorted(found)]


def test_the_check_finds_each_way_of_joining_a_room_name():
    source = """
a = ws.root / "shards"
b = self.ws.private_dir / "credentials" / name
c = os.path.join(workspace, "private")
d = Path(workspace_root) / "store"
e = ws.root.joinpath("reports")
f = tmp / "pacs"              # the phantom's own tree: not a workspace folder
g = ws.shard_sets_dir / name  # a room's content: its module names it
h = ws.curation_dir / run_id / "settings.yaml"
"""
    found = layout_joins(source, {"shards", "credentials", "private", "store", "reports", "pacs"},
                         {"root", "private_dir", "shard_sets_dir", "curation_dir"})
    assert [line.split(":")[0] for line in found] == ["2", "3", "4", "5", "6"]


def test_package_code_asks_the_workspace_for_every_room():
    names, rooms = layout_names(), room_names()
    assert {"shards", "reports", "pipeline", "pacs", "credentials", "current", "curation-index", "secret.key"} <= names
    files = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py")) if p.name != "workspace.py"
             or p.parent.name != "catalog"]
    found = [f"{p.relative_to(ROOT)}:{hit}" for p in files for hit in layout_joins(p.read_text(), names, rooms)]
    assert not found, "ask catalog.workspace.Workspace for the room (add a property there):\n" + "\n".join(found)


def test_the_docstring_draws_every_room():
    drawing = workspace.__doc__
    missing = sorted(n for n in layout_names() if n not in drawing)
    assert not missing, f"catalog/workspace.py's drawing lacks {missing}"


def test_an_evaluation_folder_names_its_workspace_only_where_it_lies_in_one(tmp_path):
    ws = Workspace.open(tmp_path / "w")
    (ws.evals_dir / "e1").mkdir(parents=True)
    assert Workspace.of_eval(ws.evals_dir / "e1") == ws
    copied = tmp_path / "copies" / "evals" / "e1"  # the same shape, but no workspace around it
    copied.mkdir(parents=True)
    assert Workspace.of_eval(copied) is None


def test_a_shard_set_names_its_workspace_only_where_it_lies_in_one(tmp_path):
    ws = Workspace.open(tmp_path / "w")
    (ws.shard_sets_dir / "knees").mkdir(parents=True)
    assert Workspace.of_shard_set(ws.shard_sets_dir / "knees") == ws
    copied = tmp_path / "copies" / "shards" / "knees"  # the same shape on a cluster's disk, no workspace around it
    copied.mkdir(parents=True)
    assert Workspace.of_shard_set(copied) is None
