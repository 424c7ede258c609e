"""manifest.json of a shard set: what was selected, from which catalog, and every shard's checksum."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

MANIFEST_VERSION = 1


@dataclass
class ShardEntry:
    file: str
    samples: int
    bytes: int
    sha256: str


@dataclass
class Manifest:
    name: str
    created: str
    query: str
    include_excluded: bool
    seed: int
    selection_sha256: str
    catalog_snapshot: dict
    samples: int
    bytes: int
    shards: list[ShardEntry]
    counts: dict = field(default_factory=dict)
    evaluation: bool = False
    schema_version: int = MANIFEST_VERSION

    def write(self, path: Path) -> None:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2, sort_keys=False) + "\n")
        os.replace(tmp, path)

    @classmethod
    def read(cls, path: str | os.PathLike) -> "Manifest":
        text = _read_text(str(path))
        d = json.loads(text)
        if d.get("schema_version") != MANIFEST_VERSION:
            raise ValueError(f"manifest schema version {d.get('schema_version')} is not {MANIFEST_VERSION}")
        d["shards"] = [ShardEntry(**s) for s in d["shards"]]
        return cls(**d)


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file, read in 1 MiB blocks (shards, manifests, checkpoints)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_text(path: str) -> str:
    if "://" in path and not path.startswith("file://"):
        import fsspec

        with fsspec.open(path, "rt") as f:
            return f.read()
    return Path(path.removeprefix("file://")).read_text()


def shard_urls(manifest_path: str, manifest: Manifest, base: str | None = None) -> list[str]:
    """Shard locations: beside the manifest (a local path or URL), or under `base` (a URL, or a
    `pipe:` command template with {} for the file name)."""
    if base is None:
        base = manifest_path.rsplit("/", 1)[0] if "/" in manifest_path else "."
    if "{}" in base:
        return [base.replace("{}", s.file) for s in manifest.shards]
    return [f"{base.rstrip('/')}/{s.file}" for s in manifest.shards]
