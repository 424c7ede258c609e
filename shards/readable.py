"""The shard builder's firewall: a selected image whose stored object cannot be carried (missing, over the pixel
budget, a PNG that declares another size than the catalog, a chunk that fails its CRC) is left out with a reason,
recorded (catalog/unreadable.py) and counted in the manifest, and the set is built from the rest.

Shards carry the store's bytes as they are, so nothing is decoded here: the IHDR is read against the catalog and
the budget, and every chunk's CRC-32 is checked (a flipped bit or a cut object fails it), at memory speed.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from catalog.codestreams import PNG_SIGNATURE
from catalog.ids import new_run_id
from catalog.pixel_budget import PixelsRefused, check_codestream
from catalog.unreadable import Unreadable


def object_problem(data: bytes, rows: int | None, cols: int | None) -> str | None:
    """The reason a stored object cannot be carried, or None."""
    try:
        check_codestream(data, rows, cols)
    except PixelsRefused as e:
        return e.reason
    if not data.startswith(PNG_SIGNATURE):
        return "decode_error"
    pos, ended = len(PNG_SIGNATURE), False
    while pos + 12 <= len(data) and not ended:
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body_end = pos + 8 + length
        if body_end + 4 > len(data):
            return "truncated"
        (crc,) = struct.unpack(">I", data[body_end:body_end + 4])
        if zlib.crc32(data[pos + 4:body_end]) != crc:
            return "decode_error"
        ended, pos = kind == b"IEND", body_end + 4
    return None if ended else "truncated"


def readable_records(store_root: Path, records: list[dict]) -> tuple[list[dict], Unreadable]:
    """The records whose objects can be carried, and what was left out (image id -> reason)."""
    unreadable = Unreadable("shards", new_run_id())
    kept = []
    for rec in records:
        try:
            data = (Path(store_root) / rec["store_path"]).read_bytes()
        except FileNotFoundError:
            unreadable.add(rec["image_id"], "missing_object")
            continue
        problem = object_problem(data, rec.get("rows"), rec.get("cols"))
        if problem:
            unreadable.add(rec["image_id"], problem)
        else:
            kept.append(rec)
    return kept, unreadable


def balanced_readable(ws, records: list[dict], spec, seed: int) -> tuple[list[dict], dict, Unreadable]:
    """The balanced draw (shards/balance.py) from images the store can give: a drawn image that cannot be carried is
    left out of the pool and the draw made again without it (rare: one or two rounds, each checking only the images
    not checked before), so the set still holds its target. The manifest's balance says how many were redrawn."""
    from shards.balance import balance

    unreadable = Unreadable("shards", new_run_id())
    pool, good = records, set()
    while True:
        picked, summary = balance(ws, pool, spec, seed)
        _, found = readable_records(ws.root, [r for r in picked if r["image_id"] not in good])
        good |= {r["image_id"] for r in picked} - set(found.images)
        unreadable.images.update(found.images)
        if not found.images:
            return picked, summary | {"unreadable_redrawn": len(unreadable.images)}, unreadable
        pool = [r for r in pool if r["image_id"] not in found.images]
        if not pool:
            return [], summary, unreadable
