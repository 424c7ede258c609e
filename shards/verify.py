"""Verify a shard set against its manifest: checksums, sample counts, every sample decodes with the set's codec."""

from __future__ import annotations

import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

from catalog.files import file_sha256
from shards.codecs import BY_EXT
from shards.manifest import Manifest


@dataclass
class Problem:
    shard: str
    problem: str

    def __str__(self) -> str:
        return f"{self.shard}: {self.problem}"


def verify(manifest_path: str | Path, decode: bool = True) -> list[Problem]:
    manifest_path = Path(manifest_path)
    manifest = Manifest.read(manifest_path)
    problems = []
    for entry in manifest.shards:
        path = manifest_path.parent / entry.file
        if not path.exists():
            problems.append(Problem(entry.file, "missing"))
            continue
        if path.stat().st_size != entry.bytes:
            problems.append(Problem(entry.file, f"size {path.stat().st_size} bytes, manifest says {entry.bytes}"))
        if file_sha256(path) != entry.sha256:
            problems.append(Problem(entry.file, "sha256 does not match the manifest"))
        try:
            n = _check_samples(path, decode, manifest.codec.get("ext", "png"))
        except Exception as e:  # a truncated or corrupt tar, an undecodable payload
            problems.append(Problem(entry.file, f"unreadable: {type(e).__name__}: {str(e)[:120]}"))
            continue
        if n != entry.samples:
            problems.append(Problem(entry.file, f"{n} samples, manifest says {entry.samples}"))
    return problems


def _check_samples(path: Path, decode: bool, payload_ext: str) -> int:
    keys: dict[str, set[str]] = {}
    with tarfile.open(path, mode="r:") as tar:
        for member in tar:
            key, _, ext = member.name.partition(".")
            data = tar.extractfile(member).read()
            if decode and ext in BY_EXT:
                BY_EXT[ext].check(data)
            elif decode and ext == "json":
                json.loads(data)
            keys.setdefault(key, set()).add(ext)
    incomplete = [k for k, exts in keys.items() if exts != {payload_ext, "json"}]
    if incomplete:
        raise ValueError(f"{len(incomplete)} samples lack a {payload_ext} or json part (the manifest's codec)")
    return len(keys)
