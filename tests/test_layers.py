"""The floors of the house (docs/DESIGN.md): catalog/ is the ground floor and imports no other package of the
project; the stages stand on it and do not import each other, except training -> shards and evaluation -> shards
and training.backbone; flows/ is the top floor. No package reaches into another's private names or modules, and no
module imports itself through others (an import cycle, even one deferred into a function).

Every import counts: top-level, inside functions, relative, `import a.b` and `from a import b`.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GROUND = "catalog"
STAGES = ("ingest", "curation", "shards", "training", "evaluation")
TOP = "flows"
DATA = "configs"  # the bundled config files (package data): any floor may read them; they import nothing
PACKAGES = (GROUND, *STAGES, TOP, DATA)
# (importing stage, what it may import from another stage): a package, or one module of it
ALLOWED = {("training", "shards"), ("evaluation", "shards"), ("evaluation", "training.backbone")}


@dataclass(frozen=True)
class Import:
    where: str  # file:line
    package: str  # the importing package
    target: str  # the module imported (a.b.c), resolved against the file system
    name: str | None  # the name taken from it (from a.b import name), when that is not a module itself
    source: str = ""  # the importing module (a.b.c)

    @property
    def target_package(self) -> str:
        return self.target.split(".")[0]


def _is_module(dotted: str) -> bool:
    path = ROOT.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _private(part: str) -> bool:
    return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))


def _module_name(path: Path) -> list[str]:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def _imports(path: Path, source: str | None = None) -> list[Import]:
    rel = path.relative_to(ROOT)
    package = rel.parts[0]
    tree = ast.parse(path.read_text() if source is None else source, filename=str(rel))
    here = _module_name(path)
    source = ".".join(here)
    is_package = path.name == "__init__.py"
    out: list[Import] = []
    aliases: dict[str, str] = {}  # local name -> module of another project package it is bound to
    for node in ast.walk(tree):
        where = f"{rel}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            for a in node.names:
                out.append(Import(where, package, a.name, None, source))
                aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here if is_package else here[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for a in node.names:
                sub = f"{module}.{a.name}"
                if a.name != "*" and _is_module(sub):
                    out.append(Import(where, package, sub, None, source))
                    aliases[a.asname or a.name] = sub
                else:
                    out.append(Import(where, package, module, a.name, source))
    # `db._sql_str` on a module imported from another package is a private name too
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and _private(node.attr)):
            target = aliases[node.value.id]
            out.append(Import(f"{rel}:{node.lineno}", package, target, node.attr, source))
    return [i for i in out if i.target_package in PACKAGES]


def _all_imports() -> list[Import]:
    return [i for pkg in PACKAGES for path in sorted((ROOT / pkg).rglob("*.py")) for i in _imports(path)]


IMPORTS = _all_imports()


def _report(violations: list[str]) -> str:
    return "\n".join(["", *violations, f"{len(violations)} violation(s)"])


def test_every_package_is_walked():
    seen = {i.package for i in IMPORTS}
    assert seen == set(PACKAGES) - {DATA}, f"no project imports found in {set(PACKAGES) - {DATA} - seen}"
    assert any(i.target_package == DATA for i in IMPORTS), "nothing reads the bundled configs through the package"


def test_the_bundled_configs_import_nothing_of_the_project():
    violations = [f"{i.where}: configs imports {i.target}" for i in IMPORTS if i.package == DATA]
    assert not violations, _report(violations)


def test_catalog_is_the_ground_floor():
    violations = [f"{i.where}: catalog imports {i.target}" for i in IMPORTS
                  if i.package == GROUND and i.target_package not in (GROUND, DATA)]
    print(_report(violations))
    assert not violations, _report(violations)


def _allowed(i: Import) -> bool:
    return any(i.package == src and (i.target == dst or i.target.startswith(dst + ".")) for src, dst in ALLOWED)


def test_stages_import_only_catalog_and_the_allowed_stages():
    violations = [f"{i.where}: {i.package} imports {i.target}" + (f".{i.name}" if i.name else "")
                  for i in IMPORTS
                  if i.package in STAGES and i.target_package not in (GROUND, DATA, i.package) and not _allowed(i)]
    print(_report(violations))
    assert not violations, _report(violations)


def test_no_package_uses_another_packages_private_names():
    violations = []
    for i in IMPORTS:
        if i.target_package == i.package:
            continue
        if any(_private(p) for p in i.target.split(".")):
            violations.append(f"{i.where}: {i.package} imports the private module {i.target}")
        elif i.name and _private(i.name):
            violations.append(f"{i.where}: {i.package} uses the private name {i.target}.{i.name}")
    print(_report(violations))
    assert not violations, _report(violations)


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def _module_edges(imports: list[Import]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for i in imports:
        if i.target != i.source and _is_module(i.target):
            edges.setdefault(i.source, set()).add(i.target)
    return edges


def test_no_module_imports_itself_through_others():
    cycles = _cycles(_module_edges(IMPORTS))
    assert not cycles, _report([" <-> ".join(c) for c in cycles])


def test_the_cycle_check_finds_a_circle():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert _cycles(edges) == [["a", "b", "c"]]


@pytest.mark.parametrize("source, expected", [
    ("from ingest.run import new_run_id\n", {("ingest.run", "new_run_id")}),
    ("def f():\n    from training import backbone\n", {("training.backbone", None)}),
    ("from . import db\n", {("catalog.db", None)}),
    ("from catalog import db\nx = db._sql_str\n", {("catalog.db", None), ("catalog.db", "_sql_str")}),
])
def test_the_walk_sees_every_kind_of_import(source, expected):
    found = _imports(ROOT / "catalog" / "probe.py", source)
    assert {(i.target, i.name) for i in found} == expected
