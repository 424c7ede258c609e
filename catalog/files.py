"""Files written whole or not at all, their checksums, and whether a location is local.

A file is written to a unique temporary name beside it (or in `tmp_dir`, e.g. private/staging, where a killed run's
leftovers are swept), fsynced, then renamed over the target: a reader sees the old content or the new, never a
part, and two writers of one path never share a temporary file (the last rename wins whole).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from pathlib import Path
from typing import Iterator

from catalog.ids import token

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def is_remote(location: str | os.PathLike) -> bool:
    """Remote: a URL with a scheme other than file:// (s3://, gs://, memory://, http://), or a webdataset `pipe:`
    command, which streams like a remote file and cannot be opened as a path either."""
    text = os.fspath(location)
    if text.startswith("pipe:"):
        return True
    m = _SCHEME.match(text)
    return m is not None and m.group(1).lower() != "file"


def local_path(location: str | os.PathLike) -> str:
    """The path of a local location (file://PATH or PATH)."""
    return os.fspath(location).removeprefix("file://")


def read_bytes(location: str, relpath: str, limit: int, storage_options: dict | None = None) -> bytes:
    """At most `limit` + 1 bytes (one more shows the file exceeds it) of a source's file, local or through fsspec
    (with `storage_options`, e.g. credentials); raises OSError subclasses as usual."""
    if is_remote(location):
        import fsspec

        with fsspec.open(f"{location.rstrip('/')}/{relpath}", "rb", **(storage_options or {})) as f:
            return f.read(limit + 1)
    with open(os.path.join(local_path(location), relpath), "rb") as f:
        return f.read(limit + 1)


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file, read in 1 MiB blocks (shards, manifests, checkpoints)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_FSYNC = True  # durability against power loss; a kill -9 alone is already covered by the rename


def configure(*, fsync: bool | None = None) -> None:
    """Process-wide file settings, set by the top floor (flows/settings.py, from ORTHO_FSYNC); tests turn fsync off."""
    global _FSYNC
    if fsync is not None:
        _FSYNC = bool(fsync)


def _fsync_enabled() -> bool:
    return _FSYNC


def fsync_dir(path: str | os.PathLike) -> None:
    """fsync a folder's entries, so that a rename into it survives power loss."""
    _fsync(path)


def _fsync(path: str | os.PathLike) -> None:
    if not _fsync_enabled():
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_name(path: Path, tmp_dir: str | os.PathLike | None = None) -> Path:
    """A unique hidden temporary name for `path`: .NAME.TOKEN.tmp beside it or in tmp_dir."""
    return Path(tmp_dir or path.parent) / f".{path.name}.{token()}.tmp"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, tmp_dir: str | os.PathLike | None = None,
                fsync: bool = True) -> Iterator[Path]:
    """Yields a unique temporary path to write `path`'s new content to; on success it is fsynced (unless `fsync` is
    false) and renamed over `path`, on failure removed, leaving the old content."""
    path = Path(path)
    tmp = temp_name(path, tmp_dir)
    try:
        yield tmp
        if fsync:
            _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write(path: str | os.PathLike, data: bytes | str, tmp_dir: str | os.PathLike | None = None, *,
                 mode: int = 0o666, fsync: bool = True) -> None:
    """Write `data` (str: UTF-8) to `path` whole or not at all; a new file gets `mode` (less the umask)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    with atomic_path(path, tmp_dir, fsync) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
