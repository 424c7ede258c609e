"""Ctrl-C, `kill -TERM` and a closed terminal, sent to a command's whole process group in a pseudo-terminal (as a
terminal and a scheduler send them): one line, the shell's exit code, no traceback, nothing left running, and the
run recorded as interrupted. One small workspace serves every command; the first ingest test starts the command's
own temporary Prefect server (in the group, as for a user), the others report to the session's test server (a server
start-up each costs more CPU than the tests are worth)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.evaluation.bars import write_bars
from tests.flows.terminal import interrupt_in_terminal, kill_in_terminal

pytestmark = [pytest.mark.slow]

LINE = "interrupted ({}): finished work is kept; run the command again to continue"


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A labelled workspace (80 radiographs, ingested and curated without Prefect), a shard set and a pico
    checkpoint; a second source not yet ingested."""
    import torch

    from catalog.workspace import Workspace
    from curation.run import curate
    from flows.demo import KL_PATTERN
    from ingest.run import ingest_source
    from ingest.sources import Source, add_source
    from shards.spec import ShardSetSpec
    from shards.writer import build_shard_set
    from training.backbone import build_backbone, export_backbone

    tree = write_bars(tmp_path_factory.mktemp("bars") / "tree")
    ws = Workspace.open(tmp_path_factory.mktemp("ws") / "workspace")
    for name in ("bars", "again"):
        add_source(ws, Source(name, str(tree), "public", labels=["folder:kl_grade"], path_pattern=KL_PATTERN,
                              modality="DX", body_part="knee"))
    ingest_source(ws, "bars")
    curate(ws)
    manifest, _, _ = build_shard_set(ws, ShardSetSpec("all", "SELECT image_id FROM images", samples_per_shard=16, max_side=0))
    torch.manual_seed(0)
    model, spec, _ = build_backbone("vit_pico_patch8_dinov3", img_size=32)
    checkpoint = export_backbone(model, spec, tmp_path_factory.mktemp("ckpt") / "backbone.safetensors")
    return ws, manifest, checkpoint


def _env(api_url: str | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(PYTHONPATH=os.getcwd(), ORTHO_FSYNC="0", COLUMNS="100", TERM="xterm")
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


def _harness_url() -> str:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


def _assert_one_line(ended, sig: int) -> None:
    assert ended.code == 128 + sig, ended.output[-2000:]
    assert ended.output.count(LINE.format(signal.Signals(sig).name)) == 1, ended.output[-2000:]
    for noise in ("Traceback", "Crash detected", "Error logging to API", "KeyboardInterrupt", "http://"):
        assert noise not in ended.output, ended.output[-2000:]
    assert ended.after_signal_s < 10, ended.after_signal_s  # GRACE_S bounds it; the rest is a loaded machine's slack
    assert ended.group_gone  # the server, the workers: nothing of the command's group outlives it


def _runs(ws, kind: str) -> list[str]:
    from catalog import db

    return [r[0] for r in db.query(ws, f"SELECT status FROM runs WHERE kind = '{kind}' ORDER BY started_at")[1]]


def test_ctrl_c_during_ingest_ends_it_in_one_line_and_records_the_run_as_interrupted(small):
    ws, _, _ = small
    ended = interrupt_in_terminal(["ingest", "again", "--batch-size", "1", "--workers", "1", "-w", str(ws.root)],
                                  _env(), ready="files ·", sig=signal.SIGINT)
    _assert_one_line(ended, signal.SIGINT)
    assert _runs(ws, "ingest")[-1] == "interrupted"


def test_a_command_killed_by_sigkill_takes_its_prefect_server_with_it(small):
    """`kill -9` runs no handler: the command's temporary server (its own session, so a terminal's Ctrl-C reaches the
    command alone) is ended by the kernel as its parent dies, instead of holding a port and a database for ever."""
    ws, _, _ = small
    started, alive = kill_in_terminal(["ingest", "again", "--batch-size", "1", "--workers", "1", "-w", str(ws.root)],
                                      _env(), ready="files ·")
    assert any("prefect.server.api.server:create_app" in c for c in started), started
    assert not [c for c in alive if "create_app" in c], alive


@pytest.mark.prefect
def test_a_second_signal_ends_a_command_at_once(small, prefect_harness):
    ws, _, _ = small
    ended = interrupt_in_terminal(["ingest", "again", "--batch-size", "1", "--workers", "1", "-w", str(ws.root)],
                                  _env(_harness_url()), ready="files ·", sig=signal.SIGTERM, second=0.05)
    assert ended.code == 128 + signal.SIGTERM and ended.group_gone
    assert "Traceback" not in ended.output and ended.after_signal_s < 3


def _server_reporting(ready: str, settle: float):
    """Ready once the command's output shows `ready`, and `settle` seconds more (its flow under way)."""
    seen: dict = {}

    def check(out: str) -> bool:
        if ready in out:
            seen.setdefault("at", time.monotonic())
        return "at" in seen and time.monotonic() - seen["at"] > settle
    return check


@pytest.mark.prefect
def test_sigterm_during_curation(small, prefect_harness):
    # signed while the signatures are computed (2-3 s here): on idle cores the rest of an 80-image curation
    # takes under 2 s, and a later signal found the command already done
    ws, _, _ = small
    ended = interrupt_in_terminal(["curate", "--full", "--workers", "1", "-w", str(ws.root)], _env(_harness_url()),
                                  ready=_server_reporting("signatures", 0.3), sig=signal.SIGTERM)
    _assert_one_line(ended, signal.SIGTERM)


@pytest.mark.prefect
def test_a_closed_terminal_during_a_shard_build(small, prefect_harness):
    ws, _, _ = small
    ended = interrupt_in_terminal(["shards", "build", "one-per-shard", "--query", "SELECT image_id FROM images",
                                   "--evaluation", "--samples-per-shard", "1", "--max-side", "32", "--workers", "1",
                                   "-w", str(ws.root)], _env(_harness_url()),
                                  ready=_server_reporting("building shard set", 1.0), sig=signal.SIGHUP)
    _assert_one_line(ended, signal.SIGHUP)
    from shards.writer import shard_sets_dir

    assert not (shard_sets_dir(ws) / "one-per-shard").exists()  # a set is published whole or not at all


@pytest.mark.prefect
def test_sigint_during_pretraining_records_the_run_as_interrupted(small, prefect_harness):
    ws, manifest, _ = small
    ended = interrupt_in_terminal(["pretrain", "--manifest", str(manifest), "--config", "cpu-tiny", "train.steps=100000",
                                   "train.num_workers=0", "optim.batch_size=4", "-w", str(ws.root)],
                                  _env(_harness_url()), ready=_server_reporting("pretrain ", 0.5), sig=signal.SIGINT)
    _assert_one_line(ended, signal.SIGINT)
    assert _runs(ws, "pretrain")[-1] == "interrupted"


@pytest.mark.prefect
def test_sigterm_during_evaluation(small, prefect_harness):
    ws, _, checkpoint = small
    ended = interrupt_in_terminal(["evaluate", "--checkpoint", str(checkpoint), "--task", "kl_grade", "--protocol",
                                   "knn,linear", "--seeds", "50", "--baseline", "random", "-w", str(ws.root)],
                                  _env(_harness_url()), ready=_server_reporting("evaluate", 2.0), sig=signal.SIGTERM)
    _assert_one_line(ended, signal.SIGTERM)
