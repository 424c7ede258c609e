"""Writing a shard set: plan (seeded order, shard boundaries), write each tar, then the manifest.

A shard set is built in a hidden temporary folder and published with one rename, so a failed or
killed build leaves nothing that looks like a shard set. Tars are byte-for-byte deterministic:
fixed order, mtime 0, uid/gid 0, no user names; PNG payloads are the store's bytes as they are,
except that a set built with `max_side` carries images larger than that reduced once, at their
depth (shards/resample.py). A set built with another codec (shards/codecs.py: htj2k) carries each
image re-encoded losslessly, checked bit-exact against the pixels before it is written.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import re
import shutil
import tarfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from catalog.errors import OrthoError
from catalog.files import atomic_path, file_sha256
from catalog.ids import token
from catalog.pixels import encode_png
from catalog.unreadable import Unreadable
from catalog.workspace import Workspace
from shards.codecs import get_codec
from shards.decode import decode_payload
from shards.manifest import Manifest, ShardEntry
from shards.readable import balanced_readable, readable_records
from shards.resample import FILTER, fit_max_side, reduced_size, resampled_meta
from shards.select import SelectionError, catalog_snapshot, sample_json, select, selection_digest
from shards.spec import ShardSetSpec

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


class ShardError(OrthoError, RuntimeError):
    pass


def parse_size(text: str) -> int:
    m = re.match(r"^\s*([\d.]+)\s*([A-Za-z]*)\s*$", str(text))
    if not m or m[2].upper() not in _UNITS:
        raise ShardError(f"cannot read size {text!r}: use e.g. 512MB, 1GiB")
    return int(float(m[1]) * _UNITS[m[2].upper()])


@dataclass
class ShardPlan:
    index: int
    records: list[dict]
    max_side: int | None = None  # reduce larger images to this longer side (None: as stored)
    codec: str = "png"  # payload codec (shards/codecs.py)

    @property
    def file(self) -> str:
        return f"shard-{self.index:06d}.tar"

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"index": self.index, "records": self.records, "max_side": self.max_side,
                                    "codec": self.codec}, default=str))

    @classmethod
    def load(cls, path: Path) -> "ShardPlan":
        d = json.loads(Path(path).read_text())
        return cls(d["index"], d["records"], d.get("max_side"), d.get("codec", "png"))


def shard_sets_dir(ws: Workspace) -> Path:
    return ws.shard_sets_dir


def plan_shards(records: list[dict], store_root: Path, seed: int, target_bytes: int | None,
                samples_per_shard: int | None, max_side: int | None = None) -> list[ShardPlan]:
    """A seeded permutation (so a shard is not one patient or source), cut by bytes or count."""
    order = np.random.default_rng(seed).permutation(len(records))
    plans, current, size = [], [], 0
    for i in order:
        rec = records[int(i)]
        path = store_root / rec["store_path"]
        try:
            nbytes = path.stat().st_size * _area_kept(rec, max_side) + 1536  # + json and tar headers, near enough
        except FileNotFoundError:
            raise ShardError(f"image {rec['image_id']} is in the catalog but missing from the store") from None
        full = (samples_per_shard and len(current) >= samples_per_shard) or (target_bytes and current and size + nbytes > target_bytes)
        if full:
            plans.append(ShardPlan(len(plans), current, max_side))
            current, size = [], 0
        current.append(rec)
        size += nbytes
    if current:
        plans.append(ShardPlan(len(plans), current, max_side))
    return plans


def _area_kept(rec: dict, max_side: int | None) -> float:
    if not max_side or not rec.get("rows") or not rec.get("cols"):
        return 1.0
    rows, cols = reduced_size(rec["rows"], rec["cols"], max_side)
    return rows * cols / (rec["rows"] * rec["cols"])


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o444
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def write_shard(store_root: Path, plan: ShardPlan, out_dir: Path) -> ShardEntry:
    """One tar, written to a temporary name and renamed when complete."""
    final = out_dir / plan.file
    with atomic_path(final) as tmp, open(tmp, "wb") as f:
        with tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for rec in plan.records:
                key = rec["image_id"]
                try:
                    png = (store_root / rec["store_path"]).read_bytes()
                except FileNotFoundError:
                    raise ShardError(f"image {key} is missing from the store") from None
                meta = rec
                if plan.max_side:
                    png, meta = _fit(png, rec, plan.max_side)
                ext, data = _encoded(png, plan.codec, key)
                _add(tar, f"{key}.{ext}", data)
                _add(tar, f"{key}.json", sample_json(meta))
    return ShardEntry(plan.file, len(plan.records), final.stat().st_size, file_sha256(final))


def _fit(png: bytes, rec: dict, max_side: int) -> tuple[bytes, dict]:
    """The payload and metadata of one sample in a set with `max_side`; the store's bytes when the image fits."""
    rows, cols = rec.get("rows"), rec.get("cols")
    if rows and cols and max(rows, cols) <= max_side:
        return png, resampled_meta(rec, rows, cols)
    pixels = decode_payload(png)
    small = fit_max_side(pixels, max_side)
    meta = resampled_meta({**rec, "rows": pixels.shape[0], "cols": pixels.shape[1]}, *small.shape)
    return (png if small is pixels else encode_png(small)), meta


def _encoded(png: bytes, codec_name: str, key: str) -> tuple[str, bytes]:
    """(extension, payload): the PNG as it is, or the pixels re-encoded and decoded back to prove them exact."""
    codec = get_codec(codec_name)
    if codec.name == "png":
        return codec.ext, png
    pixels = decode_payload(png)
    data = codec.encode(pixels)
    back = codec.decode(data)
    if back.dtype != pixels.dtype or not np.array_equal(back, pixels):
        raise ShardError(f"image {key}: the {codec.name} encoder did not round-trip its pixels exactly")
    return codec.ext, data


def counts(records: list[dict]) -> dict:
    return {col: dict(sorted(Counter(str(r[col]) for r in records).items()))
            for col in ("modality", "body_part", "source", "split", "bits")}


def resample_summary(records: list[dict], max_side: int | None) -> dict:
    """What the manifest says of the resolution policy: {} for a set at stored size."""
    if not max_side:
        return {}
    factors = [max(reduced_size(r["rows"], r["cols"], max_side)) / max(r["rows"], r["cols"])
               for r in records if r.get("rows") and r.get("cols")]
    reduced = [f for f in factors if f < 1]
    return {"max_side": max_side, "filter": FILTER, "images_reduced": len(reduced),
            "min_factor": round(min(reduced), 6) if reduced else 1.0}


def build_shard_set(ws: Workspace, spec: ShardSetSpec, *, overwrite: bool = False,
                    map_shards=None) -> tuple[Path, Manifest, bool]:
    """Build (or find up to date) the shard set `spec.name`. Returns (manifest path, manifest, built).

    `overwrite`: replace a set of that name built from another selection, codec or resolution."""
    codec_info = get_codec(spec.codec).describe()
    with ws.write_lock():
        return _build(ws, spec, overwrite, map_shards, codec_info)


def check_build(ws: Workspace, spec: ShardSetSpec, overwrite: bool = False
                ) -> tuple[list[dict], str, dict, Unreadable, Manifest | None]:
    """Everything a build checks before writing (the name, --max-side, the codec, the query and what it selects, the
    balanced draw, an existing set of that name): the records, their digest, the balancing, and the existing
    manifest when it is up to date. The command line calls it before the orchestrator starts."""
    name, seed, max_side = spec.name, spec.seed, spec.max_side or None
    codec_name = get_codec(spec.codec).name
    if not _NAME.match(name):
        raise ShardError(f"shard set name {name!r}: use lowercase letters, digits, '-', '_' or '.'")
    if max_side is not None and max_side < 16:
        raise ShardError(f"--max-side {max_side}: use 0 (images as stored) or a side of 16 pixels or more")
    records = select(ws, spec.query, spec.include_excluded, spec.evaluation)
    if not records:
        raise SelectionError("the query selects no images" + ("" if spec.include_excluded else " (after exclusions)"))
    balanced = {}
    # the stage's firewall: objects the store cannot give are left out (recorded by the build, counted in its
    # manifest); a balanced draw is made from the readable images only, so it keeps its target
    if spec.balance_spec is not None:
        records, balanced, unreadable = balanced_readable(ws, records, spec.balance_spec, seed)
    else:
        records, unreadable = readable_records(ws.root, records)
    if not records:
        raise SelectionError(f"none of the selected images can be read from the store ({unreadable.counts()})")
    digest = selection_digest(records)
    path = shard_sets_dir(ws) / name / "manifest.json"
    if path.exists():
        old = Manifest.read(path)
        same = old.selection_sha256 == digest and old.seed == seed
        same_codec = old.codec.get("name") == codec_name
        if same and old.resample.get("max_side") == max_side and same_codec:
            return records, digest, balanced, unreadable, old
        if not overwrite:
            what = ("with another selection" if not same else f"with codec {old.codec.get('name')}" if not same_codec
                    else f"at another resolution (max side {old.resample.get('max_side') or 'as stored'})")
            raise ShardError(f"shard set {name!r} exists {what}; choose a new name or pass --overwrite")
    return records, digest, balanced, unreadable, None


def _build(ws: Workspace, spec: ShardSetSpec, overwrite: bool, map_shards, codec_info: dict):
    records, digest, balanced, unreadable, current = check_build(ws, spec, overwrite)
    unreadable.save(ws)
    root = shard_sets_dir(ws)
    name, max_side = spec.name, spec.max_side or None
    final = root / name
    if current is not None:
        return final / "manifest.json", current, False
    try:
        root.mkdir(parents=True, exist_ok=True)
        for stale in list(root.glob(".*.build-*")) + list(root.glob(".*.old-*")):
            shutil.rmtree(stale, ignore_errors=True)  # a killed build's leftovers; we hold the lock
        build = root / f".{name}.build-{token()}"
        build.mkdir()
    except OSError as e:
        raise ShardError(f"cannot write shard sets under the workspace ({e.strerror})") from None
    try:
        target_bytes = parse_size(spec.target_size) if spec.target_size and not spec.samples_per_shard else None
        plans = plan_shards(records, ws.root, spec.seed, target_bytes, spec.samples_per_shard, max_side)
        for plan in plans:
            plan.codec = codec_info["name"]
        run = map_shards or (lambda items, out: [write_shard(ws.root, p, out) for p in items])
        entries = sorted(run(plans, build), key=lambda e: e.file)
        for leftover in build.glob(".*"):
            leftover.unlink()
        manifest = Manifest(
            name=name, created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), query=spec.query,
            include_excluded=spec.include_excluded, evaluation=spec.evaluation, seed=spec.seed,
            selection_sha256=digest, catalog_snapshot=catalog_snapshot(ws), samples=sum(e.samples for e in entries),
            bytes=sum(e.bytes for e in entries), shards=entries, counts=counts(records),
            resample=resample_summary(records, max_side), codec=codec_info, balance=balanced,
            unreadable=unreadable.counts())
        manifest.write(build / "manifest.json")
        if final.exists():
            trash = root / f".{name}.old-{token()}"
            os.rename(final, trash)
            os.rename(build, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(build, final)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    return final / "manifest.json", manifest, True


def list_shard_sets(ws: Workspace) -> list[Manifest]:
    root = shard_sets_dir(ws)
    if not root.exists():
        return []
    return [Manifest.read(p / "manifest.json") for p in sorted(root.iterdir())
            if not p.name.startswith(".") and (p / "manifest.json").exists()]
