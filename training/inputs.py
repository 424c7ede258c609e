"""What a run takes in, checked without torch: the shard manifest and the run folder. The command line checks them
before the orchestrator starts (a typo costs a second, not a server's start-up and torch's import)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from catalog.errors import OrthoError
from catalog.files import file_sha256, is_remote, local_path
from shards.manifest import Manifest, shard_urls


class TrainingError(OrthoError, ValueError):
    """A run that cannot start or go on; the message is one line and names what to change."""


@dataclass
class ManifestInfo:
    path: str
    sha256: str
    name: str
    samples: int
    shards: int
    evaluation: bool
    catalog_snapshot: dict
    counts: dict  # images per modality, body part, source, split, bit depth: what the run learns from


def check_manifest(path: str | Path, verify: bool = True) -> ManifestInfo:
    """Exists, parses, is not empty, is not an evaluation set, and (verify) every shard's sha256 matches."""
    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"manifest {path} does not exist")
    raw = path.read_bytes()
    try:
        manifest = Manifest.read(path)
    except Exception as e:
        raise TrainingError(f"manifest {path} is not a shard manifest: {type(e).__name__}: {str(e)[:120]}") from None
    if manifest.samples == 0 or not manifest.shards:
        raise TrainingError(f"manifest {path} selects no images: nothing to train on")
    if manifest.evaluation:
        raise TrainingError(f"shard set '{manifest.name}' was built with --evaluation (it keeps held-out images); "
                            "pretrain on a selection built without it")
    for entry, url in zip(manifest.shards, shard_urls(str(path), manifest)):
        shard = Path(local_path(url))
        if is_remote(url):
            continue  # remote shards are checked as they stream
        if not shard.is_file():
            raise TrainingError(f"shard {entry.file} of manifest {path.name} is missing")
        if shard.stat().st_size != entry.bytes:
            raise TrainingError(f"shard {entry.file} is {shard.stat().st_size} bytes, the manifest says {entry.bytes}")
        if verify and file_sha256(shard) != entry.sha256:
            raise TrainingError(f"shard {entry.file} fails its sha256 checksum: rebuild the shard set")
    return ManifestInfo(str(path.absolute()), hashlib.sha256(raw).hexdigest(), manifest.name, manifest.samples,
                        len(manifest.shards), manifest.evaluation, manifest.catalog_snapshot,
                        dict(getattr(manifest, "counts", None) or {}))


def check_run_folder(run_dir: Path) -> None:
    if not (Path(run_dir) / "run.json").is_file():
        raise TrainingError(f"{run_dir} is not a pretraining run folder (no run.json)")


def run_manifest(run_dir: Path, run: dict) -> str:
    """The manifest a run trains on: run.json keeps it relative to the run folder when both are in one workspace."""
    path = run["manifest"]
    return path if is_remote(path) or os.path.isabs(path) else str(Path(run_dir) / path)
