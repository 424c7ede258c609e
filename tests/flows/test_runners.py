"""Choosing where tasks run: --runner and --address, checked before any flow starts."""

import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.pipeline import Pipeline, PipelineError
from flows.runners import RunnerConfig, RunnerError, build_task_runner, check_address

runner = CliRunner()


@pytest.mark.parametrize("kind,address", [("dask", "tcp://10.0.0.5:8786"), ("dask", "tls://sched.example:8786"),
                                          ("ray", "10.0.0.5:6379"), ("ray", "ray://head:10001"), ("dask", None)])
def test_cluster_addresses_that_attach(kind, address):
    assert check_address(kind, address) == address


@pytest.mark.parametrize("kind,address,says", [
    ("dask", "10.0.0.5:8786", "tcp://HOST:PORT"), ("ray", "tcp://10.0.0.5:6379", "HOST:PORT"),
    ("processes", "tcp://10.0.0.5:8786", "needs --runner dask or ray"), ("dask", "tcp://h:1/x", "tcp://HOST:PORT")])
def test_addresses_that_cannot_work_are_refused(kind, address, says):
    with pytest.raises(RunnerError, match=says):
        check_address(kind, address)


def test_a_dask_address_makes_a_runner_for_that_scheduler():
    pytest.importorskip("prefect_dask")
    r = build_task_runner("dask", address="tcp://127.0.0.1:8786")
    assert r.address == "tcp://127.0.0.1:8786"
    assert build_task_runner("dask", workers=3).address is None  # a local cluster, as before


def test_cli_refuses_a_bad_address_in_one_line(tmp_path):
    r = runner.invoke(app, ["ingest", "--runner", "processes", "--address", "tcp://h:1", "--workspace", str(tmp_path)])
    assert r.exit_code == 2 and "needs --runner dask or ray" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["curate", "--runner", "dask", "--address", "h:1", "--workspace", str(tmp_path)])
    assert r.exit_code == 2 and "tcp://HOST:PORT" in r.output


def test_pipeline_files_take_an_address_per_stage(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("ingest: {runner: dask, address: 'tcp://10.0.0.5:8786'}\ncurate: {runner: ray, address: 'h:6379'}\n")
    assert Pipeline.load(good).ingest_runner == RunnerConfig("dask", address="tcp://10.0.0.5:8786")
    bad = tmp_path / "bad.yaml"
    bad.write_text("ingest: {runner: dask, address: '10.0.0.5:8786'}\n")
    with pytest.raises(PipelineError, match="ingest: address .* tcp://HOST:PORT"):
        Pipeline.load(bad)


def test_a_pipeline_file_registers_an_s3_source_with_its_credentials_reference(tmp_path, ws):
    from flows.pipeline import register_sources
    from ingest.sources import load_sources

    f = tmp_path / "p.yaml"
    f.write_text("sources:\n  - {name: scans, location: 's3://bucket/export', credentials: 'env:SCANS_KEYS'}\n")
    assert register_sources(ws, Pipeline.load(f)) == (["scans"], [])
    s = load_sources(ws)["scans"]
    assert (s.location, s.credentials) == ("s3://bucket/export", "env:SCANS_KEYS")
