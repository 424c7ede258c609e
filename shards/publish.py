"""A built shard set copied to another place (`ortho shards build ... --out s3://bucket/sets/NAME`): every tar, then
the manifest, so that a reader who finds the manifest finds every shard it names complete (an object store writes an
object whole or not at all). The copy is checked against the manifest's byte counts; `shards verify URL` re-hashes
it as it streams back."""

from __future__ import annotations

from pathlib import Path

from catalog.errors import OrthoError
from catalog.files import is_remote, local_path
from shards.manifest import Manifest

MANIFEST = "manifest.json"


class PublishError(OrthoError, OSError):
    """The destination cannot be written; the message names the shard set and the reason, not the keys."""


def publish_shard_set(manifest_path: Path, dest: str) -> tuple[str, bool]:
    """Copy the shard set of `manifest_path` to the folder or URL `dest`; returns (the manifest there, copied).
    A destination whose manifest already holds these bytes is up to date and left alone."""
    import fsspec

    manifest = Manifest.read(manifest_path)
    fs, root = fsspec.core.url_to_fs(dest if is_remote(dest) else local_path(dest))
    root = root.rstrip("/")
    target = f"{root}/{MANIFEST}"
    local_manifest = manifest_path.read_bytes()
    try:
        if fs.exists(target) and fs.cat_file(target) == local_manifest:
            return _url(dest, MANIFEST), False
        fs.makedirs(root, exist_ok=True)
        for entry in manifest.shards:
            fs.put_file(str(manifest_path.parent / entry.file), f"{root}/{entry.file}")
            if fs.size(f"{root}/{entry.file}") != entry.bytes:
                raise PublishError(f"shard set {manifest.name!r}: {entry.file} arrived incomplete at --out")
        fs.pipe_file(target, local_manifest)
    except PublishError:
        raise
    except PermissionError:
        raise PublishError(f"shard set {manifest.name!r}: --out refused the write (credentials or permissions; "
                           "an object store's come from AWS_* variables)") from None
    except (OSError, ValueError) as e:
        raise PublishError(f"shard set {manifest.name!r}: cannot write to --out ({type(e).__name__})") from None
    return _url(dest, MANIFEST), True


def _url(dest: str, name: str) -> str:
    return f"{dest.rstrip('/')}/{name}"
