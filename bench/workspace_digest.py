"""A workspace's outputs as digests, to check that a change of code leaves them byte-identical.

    python bench/workspace_digest.py WORKSPACE > before.json      # with the old code
    python bench/workspace_digest.py WORKSPACE > after.json       # with the new code, same inputs and secret
    python bench/workspace_digest.py --compare before.json after.json

What is compared: every catalog view (rows in order, without run ids, part ids, times and checkpoint paths, which
name a run rather than its content; the demo names its run and evaluation folders by their inputs), the store's objects, each shard set's shard checksums, every checkpoint's
tensors and every evaluation's metrics. Two runs compare equal only with the same workspace secret (pseudonyms,
splits and file ids are keyed by it): copy `private/secret.key` into the second workspace before its first run.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import sys
from pathlib import Path

# bench/ holds ingest.py and friends: they must not shadow the packages. The repo root comes last, so that
# PYTHONPATH=<an older checkout> digests with that checkout's code.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE] + [str(HERE.parent)]

# Columns and keys that name a run, a time or a path rather than content (a run's params hold its folder).
VOLATILE = {"run_id", "part_id", "checkpoint", "generation", "created", "eval_id", "params"}
METRICS_VOLATILE = {"eval_id", "created", "checkpoint", "started", "seconds", "finished", "path"}


def short(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def view_digests(ws) -> dict:
    from catalog import db

    with contextlib.closing(db.connect(ws)) as con:  # db.connect: older code has it too
        views = [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()]
    out = {}
    for view in sorted(views):
        cols = db.query(ws, f"SELECT * FROM {view} LIMIT 0")[0]
        keep = [c for c in cols if c not in VOLATILE and not c.endswith("_at") and not c.endswith("run_id")]
        if keep:
            rows = db.query(ws, f"SELECT {', '.join(repr(c).replace(chr(39), chr(34)) for c in keep)} FROM {view} "
                                "ORDER BY ALL")[1]
            out[f"view {view}"] = [len(rows), short(repr(rows).encode())]
    return out


def file_digests(ws) -> dict:
    from safetensors.numpy import load_file

    store = sorted(f"{p.relative_to(ws.store_dir)}:{short(p.read_bytes())}" for p in ws.store_dir.rglob("*.png"))
    out = {"store": [len(store), short("\n".join(store).encode())]}
    for manifest in sorted(ws.root.rglob("manifest.json")):
        shards = json.loads(manifest.read_text()).get("shards", [])
        out[f"shards {manifest.parent.name}"] = [[s.get("sha256"), s.get("samples")] for s in shards]
    # A run folder's name digests its manifest, whose bytes hold its creation time: keyed by file name and order.
    for i, ckpt in enumerate(sorted(ws.root.rglob("*.safetensors"), key=lambda p: (p.name, p.stat().st_size))):
        tensors = load_file(ckpt)
        out[f"checkpoint {i} {ckpt.name}"] = short(b"".join(k.encode() + tensors[k].tobytes() for k in sorted(tensors)))
    for i, metrics in enumerate(sorted(ws.root.rglob("metrics.json"), key=lambda p: p.stat().st_size)):
        out[f"metrics {i}"] = short(json.dumps(without(json.loads(metrics.read_text())), sort_keys=True).encode())
    return out


def without(doc):
    """A JSON document less the keys that name a time or a path, at every depth."""
    if isinstance(doc, dict):
        return {k: without(v) for k, v in doc.items() if k not in METRICS_VOLATILE}
    return [without(v) for v in doc] if isinstance(doc, list) else doc


def compare(a: dict, b: dict) -> int:
    differ = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    for key in sorted(set(a) | set(b)):
        print(f"{'DIFFERS' if key in differ else 'same   '}  {key}")
    print(f"{len(differ)} of {len(set(a) | set(b))} differ")
    return 1 if differ else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="a workspace, or with --compare two digest files")
    parser.add_argument("--compare", action="store_true")
    args = parser.parse_args()
    if args.compare:
        a, b = (json.loads(Path(p).read_text()) for p in args.paths)
        return compare(a, b)
    from catalog.workspace import Workspace

    ws = Workspace.open(args.paths[0])
    json.dump(view_digests(ws) | file_digests(ws), sys.stdout, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
