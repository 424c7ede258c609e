"""Verify a shard set against its manifest: checksums, sample counts, every sample decodes with the set's codec.

Each shard is read once, as a stream, whether it lies beside a local manifest or on an object store
(s3://bucket/sets/NAME/manifest.json): its sha256 and byte count are taken from the bytes the tar reader consumed.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from dataclasses import dataclass

from catalog.files import is_remote, local_path
from shards.codecs import BY_EXT, CodecError
from shards.manifest import Manifest, shard_urls


@dataclass
class Problem:
    shard: str
    problem: str

    def __str__(self) -> str:
        return f"{self.shard}: {self.problem}"


class HashingReader:
    """A read-only stream that hashes and counts every byte read through it."""

    def __init__(self, raw):
        self.raw, self.sha256, self.bytes = raw, hashlib.sha256(), 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.sha256.update(data)
        self.bytes += len(data)
        return data

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


def verify(manifest_path: str | os.PathLike, decode: bool = True) -> list[Problem]:
    manifest_path = str(manifest_path)
    manifest = Manifest.read(manifest_path)
    problems = []
    for entry, url in zip(manifest.shards, shard_urls(manifest_path, manifest)):
        try:
            stream = _open(url)
        except FileNotFoundError:
            problems.append(Problem(entry.file, "missing"))
            continue
        with stream:
            problems.extend(_check_shard(entry, HashingReader(stream), decode, manifest.codec.get("ext", "png")))
    return problems


def _open(url: str):
    if is_remote(url):
        import fsspec

        return fsspec.open(url, "rb").open()
    return open(local_path(url), "rb")


def _check_shard(entry, reader: HashingReader, decode: bool, payload_ext: str) -> list[Problem]:
    problems, n = [], None
    try:
        n = _check_samples(reader, decode, payload_ext)
    except Exception as e:  # a truncated or corrupt tar, an undecodable PNG
        problems.append(Problem(entry.file, f"unreadable: {type(e).__name__}: {str(e)[:120]}"))
    reader.drain()
    if reader.bytes != entry.bytes:
        problems.append(Problem(entry.file, f"size {reader.bytes} bytes, manifest says {entry.bytes}"))
    if reader.sha256.hexdigest() != entry.sha256:
        problems.append(Problem(entry.file, "sha256 does not match the manifest"))
    if n is not None and n != entry.samples:
        problems.append(Problem(entry.file, f"{n} samples, manifest says {entry.samples}"))
    return problems


def _check_samples(stream, decode: bool, payload_ext: str) -> int:
    keys: dict[str, set[str]] = {}
    with tarfile.open(fileobj=stream, mode="r|") as tar:
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
        raise CodecError(f"{len(incomplete)} samples lack a {payload_ext} or json part (the manifest's codec)")
    return len(keys)

