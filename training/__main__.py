"""`python -m training` / `torchrun -m training`: the pretraining job without Prefect.

    torchrun --nproc-per-node 8 -m training --manifest M --config C [key=value ...] [--run-dir D]
    torchrun --nproc-per-node 8 -m training --resume RUN_DIR
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

# An entry point of its own (torchrun starts it without flows/): the same offline guard as `ortho`, set before
# timm imports huggingface_hub, which reads it once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from catalog.ids import new_pretrain_id  # noqa: E402
from catalog.workspace import Workspace  # noqa: E402
from training.backbone import CheckpointError  # noqa: E402
from training.config import ConfigError, load_config  # noqa: E402
from training.data import TrainingError  # noqa: E402
from training.distributed import barrier, broadcast_object, setup_distributed  # noqa: E402
from training.trainer import prepare_run, train  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", help="key=value config overrides")
    p.add_argument("--manifest")
    p.add_argument("--config")
    p.add_argument("--run-dir", help="run folder [default: the manifest's workspace's runs/<run_id>, where "
                                      "`ortho embed --checkpoint <run_id>` finds it; ./runs/<run_id> for a set "
                                      "kept outside a workspace]")
    p.add_argument("--resume", help="continue the run in this folder")
    p.add_argument("--until", type=int, help="pause after this step (with a checkpoint)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        cfg = None if args.resume else load_config(args.config, args.overrides)
        ctx = setup_distributed(cfg.train.device if cfg else "auto")
        if args.resume:
            run_dir = Path(args.resume)
        else:
            if not args.manifest:
                raise TrainingError("--manifest is required for a new run")
            run_dir = Path(broadcast_object(args.run_dir or str(_new_run_dir(args.manifest))))
            if ctx.is_main and not (run_dir / "run.json").exists():
                prepare_run(cfg, args.manifest, run_dir)
            barrier()
        summary = train(run_dir, args.overrides if args.resume else (), show_progress=ctx.is_main,
                        until=args.until)
    except (TrainingError, ConfigError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if ctx.is_main:
        print(f"run {summary['run_id']}: {summary['steps']} steps; backbone {summary.get('backbone', 'not yet')}")
        for message in summary.get("collapse", []):
            print(f"collapsed: {message}", file=sys.stderr)
    return 0


def _new_run_dir(manifest: str) -> Path:
    ws = None if "://" in manifest else Workspace.of_shard_set(Path(manifest).parent)
    return (ws.train_runs_dir if ws else Path("runs")) / new_pretrain_id()


if __name__ == "__main__":
    sys.exit(main())
