"""PACS sources against a real Orthanc (Debian's `orthanc` and `orthanc-dicomweb`): first and incremental pulls over
DICOMweb and DIMSE, a killed pull, an archive that goes away, refused settings, and no planted value anywhere."""

from __future__ import annotations

import os

import pytest

from catalog import db
from catalog.errors import OrthoError
from catalog.workspace import Workspace
from ingest.pacs.pull import PullState
from ingest.run import ingest_source
from ingest.sources import Source, SourceError, add_source
from tests.killing import run_or_kill
from tests.orthanc import CALLING_AE, PASSWORD, PLANTED, USER, Orthanc, load_studies, orthanc_binary
from tests.phi_scan import scan_workspace
from tests.snapshots import ingested_snapshot

pytestmark = pytest.mark.skipif(orthanc_binary() is None, reason="Orthanc is not installed (apt-get install orthanc "
                                                                  "orthanc-dicomweb): the PACS tests need a real archive")


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    server = Orthanc(tmp_path_factory.mktemp("orthanc")).start()
    yield server
    server.stop()


@pytest.fixture
def archive(orthanc):
    if orthanc.proc is None:
        orthanc.start()
    orthanc.clear()
    return orthanc


@pytest.fixture(autouse=True)
def credentials(monkeypatch):
    monkeypatch.setenv("ORTHO_TEST_PACS", f"{USER}:{PASSWORD}")


def dicomweb(ws, archive, name="pacs", **options) -> Source:
    pacs = {"credentials": "env:ORTHO_TEST_PACS", "max_connections": 2, **options}
    return add_source(ws, Source(name, archive.dicomweb, "internal", pacs=pacs))


def dimse(ws, archive, name="pacs", **options) -> Source:
    return add_source(ws, Source(name, archive.dimse, "internal", pacs={"calling_ae": CALLING_AE, **options}))


def counts(ws, source="pacs") -> tuple[int, int]:
    files = db.query(ws, "SELECT count(*) FROM files WHERE source = ? AND status <> 'quarantined'", [source])[1][0][0]
    images = db.query(ws, "SELECT count(*) FROM images")[1][0][0]
    return files, images


def test_first_and_incremental_pull_over_dicomweb(ws, archive):
    load_studies(archive, 3)  # 3 studies x 2 series x 2 instances
    dicomweb(ws, archive)
    first = ingest_source(ws, "pacs", batch_size=4)
    assert (first.result.files, first.result.images) == (12, 12)
    assert first.pull["new_studies"] == 3 and first.pull["complete"] == 3 and first.pull["failed"] == 0
    assert counts(ws) == (12, 12)

    load_studies(archive, 2, seed=1)  # new studies arrive
    second = ingest_source(ws, "pacs", batch_size=4)
    assert second.pull["listed_studies"] == 5 and second.pull["up_to_date"] == 3 and second.pull["new_studies"] == 2
    assert second.result.files == 8 and counts(ws) == (20, 20)

    third = ingest_source(ws, "pacs")
    assert third.result.files == 0 and third.pull["new_studies"] == 0
    assert PullState.load(ws, "pacs").summary()["studies_complete"] == 5

    hits = scan_workspace(ws.root, list(PLANTED.values()) + [PASSWORD])
    assert hits == []


def test_filters_select_studies_and_series(ws, archive):
    load_studies(archive, 2, modality="DX")
    load_studies(archive, 1, modality="MR", seed=2)
    dicomweb(ws, archive, queries=["ModalitiesInStudy=MR", "BodyPartExamined=KNEE,HIP"])
    summary = ingest_source(ws, "pacs")
    assert summary.pull["new_studies"] == 1 and summary.result.files == 4
    assert db.query(ws, "SELECT DISTINCT modality FROM images")[1] == [("MR",)]


def test_dimse_get_and_move_pull_the_same_images_as_dicomweb(tmp_path, archive):
    load_studies(archive, 2)
    images = {}
    for name, add in (("web", dicomweb), ("get", dimse), ("move", lambda w, a, name: dimse(
            w, a, name, retrieve="move", move_port=a.move_port))):
        ws = Workspace.open(tmp_path / name)
        add(ws, archive, name=name)
        summary = ingest_source(ws, name, batch_size=3)
        assert summary.result.files == 8 and summary.pull["complete"] == 2, name
        images[name] = db.query(ws, "SELECT image_id FROM images ORDER BY 1")[1]
    assert images["web"] == images["get"] == images["move"] and len(images["web"]) == 8


def test_wrong_settings_are_refused_at_sources_add(ws, archive, monkeypatch):
    with pytest.raises(SourceError, match="refused the credentials"):
        monkeypatch.setenv("ORTHO_TEST_PACS", f"{USER}:wrong")
        dicomweb(ws, archive)
    monkeypatch.setenv("ORTHO_TEST_PACS", f"{USER}:{PASSWORD}")
    wrong_called = archive.dimse.replace("ORTHANC@", "NOTORTHANC@")
    with pytest.raises(SourceError, match="rejected the association"):
        add_source(ws, Source("pacs", wrong_called, "internal", pacs={"calling_ae": CALLING_AE}))
    with pytest.raises(SourceError, match="refused a query"):
        dimse(ws, archive, calling_ae="STRANGER")
    with pytest.raises(OrthoError, match="--query 'PatientName'"):
        dicomweb(ws, archive, queries=["PatientName=Doe*"])
    with pytest.raises(OrthoError, match="StudyDate"):
        dicomweb(ws, archive, queries=["StudyDate=2019-03-14"])
    with pytest.raises(OrthoError, match="credentials do not belong"):
        add_source(ws, Source("pacs", archive.dicomweb.replace("//", f"//{USER}:{PASSWORD}@"), "internal"))
    assert not ws.sources_path.exists() or "pacs" not in ws.sources_path.read_text()


def test_archive_going_away_ends_the_pull_and_the_next_run_resumes(ws, archive):
    load_studies(archive, 3)
    dicomweb(ws, archive)
    ws_sources = ws.sources_path.read_text()

    def stop_after_first(result, summary):
        if summary.result.files == 2:
            archive.stop(kill=True)

    with pytest.raises(Exception, match="source 'pacs': the archive does not answer") as err:
        ingest_source(ws, "pacs", batch_size=2, on_batch=stop_after_first)
    assert PASSWORD not in str(err.value) and "127.0.0.1" not in str(err.value)
    assert db.query(ws, "SELECT status FROM runs ORDER BY started_at DESC LIMIT 1")[1] == [("failed",)]
    assert counts(ws)[0] == 2  # whole batches only
    assert not list(ws.root.rglob("*.tmp"))
    assert ws.sources_path.read_text() == ws_sources

    archive.start()
    again = ingest_source(ws, "pacs", batch_size=2)
    assert again.result.files == 10 and again.files_skipped == 2 and counts(ws) == (12, 12)
    assert again.pull["complete"] == 3


def test_an_instance_the_archive_will_not_give_fails_its_study_until_a_later_run(ws, archive, monkeypatch):
    from ingest.pacs.dicomweb import DicomWebClient
    from ingest.pacs.study import Instance

    load_studies(archive, 2)
    dicomweb(ws, archive)
    real = DicomWebClient.instances
    monkeypatch.setattr(DicomWebClient, "instances", lambda self, study, body_parts=None: real(
        self, study, body_parts) + [Instance(study, "1.2.3", "1.2.3.4")])  # listed, but not in the archive
    monkeypatch.setattr(DicomWebClient, "__init__", _fast_retries(DicomWebClient.__init__))
    first = ingest_source(ws, "pacs")
    assert first.pull["failed"] == 2 and first.result.quarantined == {"pacs_retrieve_failed": 2}
    monkeypatch.setattr(DicomWebClient, "instances", real)
    second = ingest_source(ws, "pacs")
    assert second.pull["new_studies"] == 2 and second.pull["complete"] == 2 and second.result.files == 0


def _fast_retries(init):
    def fast(self, *a, **kw):
        init(self, *a, **{**kw, "backoff_s": 0.01})
    return fast


KILL_SCRIPT = """
import os, sys
os.environ["ORTHO_TEST_PACS"] = sys.argv[2]
from catalog.workspace import Workspace
from ingest.run import ingest_source
ingest_source(Workspace.open(sys.argv[1]), "pacs", batch_size=2)
"""


@pytest.mark.reliability
def test_killed_pull_rerun_equals_an_uninterrupted_pull(tmp_path, archive):
    load_studies(archive, 4)
    reference = Workspace.open(tmp_path / "ref")
    dicomweb(reference, archive)
    run_or_kill(KILL_SCRIPT, [str(reference.root), f"{USER}:{PASSWORD}"])
    expected = ingested_snapshot(reference)
    assert len(expected["images"]) == 16

    victim = Workspace.open(tmp_path / "victim")
    victim.secret_path.write_bytes(reference.secret_path.read_bytes())
    dicomweb(victim, archive)
    kills = 0
    for parts in (2, 5):
        if not run_or_kill(KILL_SCRIPT, [str(victim.root), f"{USER}:{PASSWORD}"],
                           lambda: len(os.listdir(victim.parts_dir)) >= parts):
            kills += 1
    run_or_kill(KILL_SCRIPT, [str(victim.root), f"{USER}:{PASSWORD}"])
    assert kills >= 1
    assert ingested_snapshot(victim) == expected
    assert PullState.load(victim, "pacs").summary()["studies_complete"] == 4


def test_cli_pull_through_prefect_keeps_credentials_out_of_logs_and_database(tmp_path, archive, prefect_harness):
    import json

    from typer.testing import CliRunner

    from flows.cli import app
    from tests.phi_scan import database_hits, prefect_database

    load_studies(archive, 2)
    ws = str(tmp_path / "workspace")
    runner = CliRunner()
    r = runner.invoke(app, ["sources", "add", "archive", archive.dicomweb, "--credentials", "env:ORTHO_TEST_PACS",
                            "--query", "ModalitiesInStudy=DX", "--max-connections", "2", "--workspace", ws])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["ingest", "--runner", "threads", "--workers", "2", "--batch-size", "3",
                            "--workspace", ws])
    assert r.exit_code == 0, r.output
    assert "PACS pulls" in r.output
    status = json.loads(runner.invoke(app, ["status", "--json", "--workspace", ws]).output)
    assert status["pacs_pulls"]["archive"]["studies_complete"] == 2
    assert status["pacs_pulls"]["archive"]["instances"] == 8
    needles = [PASSWORD, *PLANTED.values()]
    assert scan_workspace(tmp_path / "workspace", needles) == []
    assert database_hits(prefect_database(), "|".join(needles)) == []

    archive.stop(kill=True)
    r = runner.invoke(app, ["ingest", "--workspace", ws])
    assert r.exit_code == 2
    # (a "Logging error" above it is CliRunner's: Prefect's console handler still holds the first invoke's stream)
    assert r.output.strip().splitlines()[-1].startswith("error: source 'archive': the archive does not answer")

