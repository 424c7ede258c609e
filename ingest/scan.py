"""Listing a source: every file once, in a stable order, without hanging on symlink loops.

Local folders are walked with os.scandir (following links to folders, remembering every folder
already entered by device and inode); other locations go through fsspec (s3://, gs://, memory://).
Problems found while listing become entries too, so that they are accounted for.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Iterator

from catalog.errors import OrthoError
from catalog.files import is_remote, local_path


@dataclass(frozen=True)
class ScanEntry:
    relpath: str
    size: int = 0
    mtime_ns: int = 0
    problem: str | None = None  # a quarantine reason found while listing
    etag: str = ""  # an object's version id or ETag (object stores): what says its content changed

    @property
    def version(self) -> str:
        return f"{self.size}-{self.etag}" if self.etag else f"{self.size}-{self.mtime_ns}"


class SourceUnavailable(OrthoError, OSError):
    """The source's location cannot be listed at all (its path is not repeated: it may name someone)."""


def scan_local(root: str, skip: set[str] = frozenset()) -> Iterator[ScanEntry]:
    root = os.path.abspath(root)
    seen_dirs: set[tuple[int, int]] = set()
    try:
        st = os.stat(root)
    except OSError as e:
        raise SourceUnavailable(f"the source location cannot be read ({e.strerror}); see `ortho sources list`") from None
    if not os.path.isdir(root):
        raise SourceUnavailable("the source location is not a folder; see `ortho sources list`")
    seen_dirs.add((st.st_dev, st.st_ino))
    yield from _walk(root, "", seen_dirs, skip)


def _walk(path: str, rel: str, seen: set, skip: set[str]) -> Iterator[ScanEntry]:
    try:
        with os.scandir(path) as it:
            entries = sorted(it, key=lambda e: e.name)
    except PermissionError:
        yield ScanEntry(rel or ".", problem="unreadable_directory")
        return
    except OSError:
        yield ScanEntry(rel or ".", problem="unreadable_directory")
        return
    for entry in entries:
        relpath = f"{rel}/{entry.name}" if rel else entry.name
        if relpath in skip:
            continue
        try:
            st = entry.stat(follow_symlinks=True)
        except FileNotFoundError:
            yield ScanEntry(relpath, problem="broken_symlink")
            continue
        except OSError as e:
            yield ScanEntry(relpath, problem="symlink_loop" if e.errno == 40 else "permission_denied")
            continue
        if stat.S_ISDIR(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if key in seen:
                if entry.is_symlink():
                    yield ScanEntry(relpath, problem="symlink_loop")
                continue
            seen.add(key)
            yield from _walk(entry.path, relpath, seen, skip)
        elif stat.S_ISREG(st.st_mode):
            yield ScanEntry(relpath, st.st_size, st.st_mtime_ns)
        else:  # a fifo, socket or device (or a link to one): accounted for, never opened (a fifo's read blocks)
            yield ScanEntry(relpath, 0, st.st_mtime_ns, problem="not_regular_file")


def scan_fsspec(url: str, skip: set[str] = frozenset(), storage_options: dict | None = None) -> Iterator[ScanEntry]:
    """An object's version is its size and version id or ETag (a rewrite changes it even within the same second);
    stores that give neither fall back to size and modification time."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
    root = root.rstrip("/")
    fs.invalidate_cache()  # a long-lived process (`ortho serve`) would read an older listing's ETags
    try:
        listing = fs.find(root, detail=True)
    except OSError as e:  # refused keys, no such bucket, no answer: the message may hold the URL
        raise SourceUnavailable(f"the source location cannot be listed ({type(e).__name__}); check its "
                                "--credentials and `ortho sources list`") from None
    for path in sorted(listing):
        info = listing[path]
        if info.get("type") == "directory":
            continue
        relpath = path[len(root):].lstrip("/")
        if relpath in skip:
            continue
        mtime = info.get("mtime") or info.get("LastModified") or info.get("created") or 0
        if hasattr(mtime, "timestamp"):
            mtime = mtime.timestamp()
        etag = str(info.get("VersionId") or info.get("ETag") or info.get("etag") or "").strip('"')
        yield ScanEntry(relpath, int(info.get("size") or 0), int(float(mtime) * 1e9), etag=etag)


def scan(location: str, skip: set[str] = frozenset(), storage_options: dict | None = None) -> Iterator[ScanEntry]:
    """`storage_options`: what fsspec needs for a remote location (credentials), resolved by the caller."""
    if is_remote(location):
        return scan_fsspec(location, skip, storage_options)
    return scan_local(local_path(location), skip)
