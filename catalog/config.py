"""One config convention for every stage: a dataclass of defaults (nested dataclasses for sections), YAML files
layered over it in order, `key=value` overrides last, and the resolved config saved beside the outputs.

    cfg = load(CurateConfig, ["my-curation.yaml"], ["dedup.threshold=0.7", "batch_size=256"])
    save_resolved(cfg, run_dir / "settings.yaml")

Every key must exist in the defaults, so a typo (`dedup.treshold=0.7`) fails before anything starts, with the
closest real keys named; a value of the wrong type fails with one line naming the key. Values are read as YAML
(`2e-4`, `true`, `[0.5, 1.0]`). A section's value is a mapping of its keys; an open mapping (`dict` field)
is merged key by key, so `model.kwargs.depth=4` and `model.kwargs={depth: 4}` say the same.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, TypeVar

import yaml

from catalog.errors import BrokenInvariant, OrthoError, SettingRefused
from catalog.files import atomic_write

T = TypeVar("T")


class ConfigError(OrthoError):
    """A config file or override that does not fit the settings it is for."""


@dataclass(frozen=True)
class Kind:
    """What one key takes: bool, int, float, str, any, mapping, or seq (fixed `items`, or any number of `item`)."""

    base: str
    items: tuple[Kind, ...] | None = None
    item: Kind | None = None
    optional: bool = False
    as_tuple: bool = False


ANY = Kind("any")
# A schema is a nested dict: key -> Kind, or key -> the schema of a section (a nested dataclass).
Schema = dict


# --- schemas ---------------------------------------------------------------------------------

def kind_of_hint(hint: Any) -> Kind | Schema:
    """The Kind of a type annotation (a nested dataclass: its schema)."""
    if dataclasses.is_dataclass(hint):
        return schema_of(hint)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and len(rest) < len(args):
            inner = kind_of_hint(rest[0])
            return dataclasses.replace(inner, optional=True) if isinstance(inner, Kind) else ANY
        return ANY
    if hint in (bool, int, float, str):
        return Kind(hint.__name__)
    if hint is dict or origin is dict:
        return Kind("mapping")
    if hint is list or origin is list:
        return Kind("seq", item=_item(args[0]) if args else ANY)
    if hint is tuple or origin is tuple:
        if not args or (len(args) == 2 and args[1] is Ellipsis):
            return Kind("seq", item=_item(args[0]) if args else ANY, as_tuple=True)
        return Kind("seq", items=tuple(_item(a) for a in args), as_tuple=True)
    return ANY


def _item(hint: Any) -> Kind:
    kind = kind_of_hint(hint)
    return kind if isinstance(kind, Kind) else ANY


def schema_of(cls: type) -> Schema:
    """The schema of a config dataclass, from its type annotations."""
    hints = typing.get_type_hints(cls)
    return {f.name: kind_of_hint(hints[f.name]) for f in dataclasses.fields(cls) if f.init}


def flat_keys(schema: Schema, prefix: str = "") -> list[str]:
    """Every settable key, dotted: sections and their keys (not the keys inside an open mapping)."""
    out = []
    for key, kind in schema.items():
        out.append(prefix + key)
        if isinstance(kind, dict):
            out += flat_keys(kind, prefix + key + ".")
    return out


def did_you_mean(key: str, valid: Iterable[str], n: int = 3) -> str:
    """' (did you mean 'a'?)' with the closest valid keys, or '' when none is close."""
    close = difflib.get_close_matches(key, list(valid), n=n)
    if not close:
        return ""
    others = f"; also close: {', '.join(repr(c) for c in close[1:])}" if len(close) > 1 else ""
    return f" (did you mean '{close[0]}'?){others}"


# --- values ----------------------------------------------------------------------------------

def coerce(key: str, value: Any, kind: Kind, error: type[Exception] = ConfigError) -> Any:
    """`value` as `kind` takes it, or `error` with one line naming the key."""
    if kind.base == "any" or (value is None and kind.optional):
        return value
    if kind.base == "bool":
        if not isinstance(value, bool):
            raise error(f"config key '{key}' takes true or false, got {value!r}")
        return value
    if kind.base in ("int", "float"):
        return _number(key, value, kind.base, error)
    if kind.base == "str":
        if isinstance(value, (dict, list, tuple)) or value is None:
            raise error(f"config key '{key}' takes a string, got {value!r}")
        return value if isinstance(value, str) else str(value)
    if kind.base == "mapping":
        if not isinstance(value, dict):
            raise error(f"config key '{key}' takes a mapping, got {value!r}")
        return value
    return _sequence(key, value, kind, error)


def _number(key: str, value: Any, base: str, error: type[Exception]) -> int | float:
    if isinstance(value, str):  # YAML 1.1 reads 2e-4 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise error(f"config key '{key}' takes a number, got {value!r}")
    if base == "int" and isinstance(value, float) and not value.is_integer():
        raise error(f"config key '{key}' takes an integer, got {value!r}")
    return int(value) if base == "int" else float(value)


def _sequence(key: str, value: Any, kind: Kind, error: type[Exception]) -> list | tuple:
    if kind.items is not None:
        if not isinstance(value, (list, tuple)) or len(value) != len(kind.items):
            raise error(f"config key '{key}' takes a list of {len(kind.items)} values, got {value!r}")
        out = [coerce(f"{key}[{i}]", v, k, error) for i, (k, v) in enumerate(zip(kind.items, value))]
    else:
        if isinstance(value, dict) or value is None:
            raise error(f"config key '{key}' takes a list, got {value!r}")
        values = value if isinstance(value, (list, tuple)) else [value]  # a scalar: a list of one
        out = [coerce(f"{key}[{i}]", v, kind.item or ANY, error) for i, v in enumerate(values)]
    return tuple(out) if kind.as_tuple else out


# --- layers ----------------------------------------------------------------------------------

def parse_override(text: str, error: type[Exception] = ConfigError) -> dict:
    """`optim.lr=2e-4` -> {"optim": {"lr": 0.0002}}; values are read as YAML scalars or lists."""
    if "=" not in text:
        raise error(f"override '{text}' is not key=value")
    key, _, raw = text.partition("=")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise error(f"override '{text}': value is not valid YAML ({getattr(e, 'problem', e)})") from None
    out: dict = {}
    node = out
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def read_mapping(path: Path, error: type[Exception] = ConfigError, what: str = "config file",
                 shown: str | None = None) -> dict:
    """A YAML file that must hold a mapping of sections; each way it can fail is one line."""
    shown = shown or str(path)
    if not path.is_file():
        raise error(f"{what} {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:  # where and what kind, never the text around it (a file may hold any value)
        mark, problem = getattr(e, "problem_mark", None), getattr(e, "problem", None) or type(e).__name__
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise error(f"{what} {shown} is not valid YAML{at}: {problem}") from None
    if not isinstance(data, dict):
        raise error(f"{what} {shown} must hold a mapping of sections")
    return data


def read_layers(path: str | os.PathLike, error: type[Exception] = ConfigError, depth: int = 0) -> list[dict]:
    """A YAML file's mapping, after the files its `base:` chain names (relative to it), in order."""
    path = Path(path)
    if depth > 8:
        raise error(f"config {path.name}: 'base:' chain deeper than 8 files")
    data = read_mapping(path, error)
    base = data.pop("base", None)
    return (read_layers(path.parent / base, error, depth + 1) if base else []) + [data]


def merge(tree: dict, update: dict, schema: Schema, error: type[Exception] = ConfigError,
          root: Schema | None = None, prefix: str = "") -> None:
    """`update` into `tree` (in place), every key checked against `schema`."""
    root = schema if root is None else root
    if not isinstance(update, dict):
        raise error(f"config section '{prefix.rstrip('.')}' takes a mapping, got {update!r}")
    for key, value in update.items():
        full = prefix + str(key)
        if key not in schema:
            hint = did_you_mean(full, flat_keys(root)) or (
                f" (keys here: {', '.join(sorted(schema))})" if len(schema) <= 12 else "")
            raise error(f"unknown config key '{full}'{hint}")
        kind = schema[key]
        if isinstance(kind, dict):
            if not isinstance(value, dict):
                raise error(f"config key '{full}' is a section, got {value!r}")
            merge(tree[key], value, kind, error, root, full + ".")
        elif kind.base == "mapping" and isinstance(tree.get(key), dict):
            tree[key] = {**tree[key], **coerce(full, value, kind, error)}
        else:
            tree[key] = coerce(full, value, kind, error)


def resolve_tree(defaults: dict, schema: Schema, files: Iterable[str | os.PathLike] = (), layers: Iterable[dict] = (),
                 overrides: Iterable[str] = (), error: type[Exception] = ConfigError) -> dict:
    """defaults <- each file (after its base: chain) <- each mapping of `layers` <- each key=value."""
    tree = copy.deepcopy(defaults)
    for path in files:
        for layer in read_layers(path, error):
            merge(tree, layer, schema, error)
    for layer in layers:
        merge(tree, layer or {}, schema, error)
    for text in overrides:
        merge(tree, parse_override(text, error), schema, error)
    return tree


# --- dataclasses -----------------------------------------------------------------------------

def load(cls: type[T], files: Iterable[str | os.PathLike] = (), overrides: Iterable[str] = (), *,
         layers: Iterable[dict] = (), base: T | None = None, error: type[Exception] = ConfigError) -> T:
    """The resolved `cls`: its defaults (or `base`) <- YAML files <- mappings <- key=value overrides."""
    schema = schema_of(cls)
    tree = resolve_tree(to_dict(base if base is not None else cls()), schema, _paths(files), layers, overrides, error)
    return build(cls, tree, error)


def _paths(files) -> list:
    if files is None:
        return []
    return [files] if isinstance(files, (str, os.PathLike)) else list(files)


def build(cls: type[T], tree: dict, error: type[Exception] = ConfigError, prefix: str = "") -> T:
    """`cls` from a resolved tree (plain values, as to_dict gives them), each value coerced to its field's type.
    A dataclass's own check (__post_init__) raising a bare ValueError/TypeError becomes `error`."""
    schema = schema_of(cls)
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, kind in schema.items():
        if name not in tree:
            continue
        value = tree[name]
        if isinstance(kind, dict):
            kwargs[name] = build(hints[name], value, error, f"{prefix}{name}.")
        else:
            kwargs[name] = coerce(prefix + name, value, kind, error)
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:
        if type(e) not in (ValueError, TypeError, SettingRefused):  # a project error: already written for the user
            raise
        where = f"config section '{prefix.rstrip('.')}'" if prefix else f"{cls.__name__}"
        raise error(f"{where}: {' '.join(str(e).split())}") from None


def default_of(cls: Any, key: str) -> Any:
    """The default of `cls`'s field `key` (dotted: `finetune.epochs`), read from the dataclass (or the value of an
    instance that serves as a stage's defaults): where a command line option takes a stage's default, so that it
    is written once, in the dataclass."""
    if not isinstance(cls, type):
        value = cls
        for part in key.split("."):
            value = getattr(value, part)
        return value
    head, _, rest = key.partition(".")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if head not in fields:
        raise BrokenInvariant(f"{cls.__name__} has no field {head!r}")
    f = fields[head]
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        raise BrokenInvariant(f"{cls.__name__}.{head} has no default")
    for part in rest.split(".") if rest else ():
        value = getattr(value, part)
    return value


def to_dict(cfg: Any) -> Any:
    """A config dataclass (or a tree holding some) as plain YAML/JSON values: mappings, lists, scalars."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, Path):
        return str(cfg)
    return cfg


def dump(cfg: Any) -> str:
    """The resolved config as YAML, keys in declaration order."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def save_resolved(cfg: Any, path: str | os.PathLike) -> Path:
    """The resolved config as YAML at `path`, written whole or not at all."""
    atomic_write(path, dump(cfg))
    return Path(path)
