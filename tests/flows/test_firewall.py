"""The failure firewall through Prefect: a file's unexpected error is its quarantine; an error outside the per-file
firewall fails the flow with a scrubbed error; Prefect's database (states, logs, events) never holds the text."""

import re

import pytest
from typer.testing import CliRunner

from catalog.workspace import Workspace
from flows.firewall import ScrubbedError, firewall
from flows.runners import RunnerConfig
from ingest.config import IngestConfig
from tests.firewall_tree import NEEDLES, PLANTED, add_tree_source, file_statuses, raising_for_one_file, write_tree
from tests.phi_scan import database_hits, prefect_database, scan_workspace


NEEDLE_PATTERN = "|".join(re.escape(n) for n in NEEDLES)


@pytest.mark.prefect
def test_a_reader_error_in_a_flow_is_one_quarantined_file(tmp_path, monkeypatch, prefect_harness, ortho_log):
    from flows.ingest import ingest_flow

    raising_for_one_file(monkeypatch)  # the threads runner runs tasks in this process: the patch applies
    ws = Workspace.open(tmp_path / "w")
    add_tree_source(ws, write_tree(tmp_path / "tree"))
    [summary] = ingest_flow(str(ws.root), ["src"], IngestConfig(batch_size=4), RunnerConfig("threads", 2))
    assert summary["files_processed"] == 6 and summary["quarantined"] == {"internal_error": 1}
    assert file_statuses(ws)["odd.png"] == ("quarantined", "internal_error", "RuntimeError")
    assert scan_workspace(ws.root, NEEDLES) == []
    assert not re.search(NEEDLE_PATTERN, ortho_log.text, re.I)
    assert database_hits(prefect_database(), NEEDLE_PATTERN) == []


@pytest.mark.prefect
@pytest.mark.slow
def test_a_failure_outside_the_file_firewall_fails_the_flow_scrubbed(tmp_path, monkeypatch, prefect_harness,
                                                                    ortho_log):
    from flows.cli import app
    from flows.ingest import ingest_flow
    from ingest import batch

    calls = []

    def commit_part(*args, **kwargs):
        calls.append(1)
        raise OSError(5, PLANTED)

    monkeypatch.setattr(batch, "commit_part", commit_part)
    ws = Workspace.open(tmp_path / "w")
    add_tree_source(ws, write_tree(tmp_path / "tree"))
    with pytest.raises(ScrubbedError, match=r"^ingest-batch failed: internal_error \(OSError\)$") as e:
        ingest_flow(str(ws.root), ["src"], IngestConfig(batch_size=8), RunnerConfig("threads", 1))
    assert e.value.__context__ is None and e.value.__cause__ is None
    assert len(calls) == 3  # the patch applied, and an I/O error is still retried (retries=2) once scrubbed
    r = CliRunner().invoke(app, ["ingest", "--runner", "threads", "--workers", "1", "--workspace", str(ws.root)])
    assert r.exit_code == 1 and "error: ingest-batch failed: internal_error (OSError)" in r.output
    assert not re.search(NEEDLE_PATTERN, r.output + ortho_log.text, re.I)
    assert scan_workspace(ws.root, NEEDLES) == []
    db = prefect_database()
    assert database_hits(db, re.escape("internal_error (OSError)"))  # the scan reads the database the flow wrote
    assert database_hits(db, NEEDLE_PATTERN) == []


def test_the_firewall_lets_curated_errors_through_and_cuts_their_chain():
    from ingest.scan import SourceUnavailable

    @firewall("stage")
    def curated():
        try:
            raise KeyError(PLANTED)
        except KeyError:
            raise SourceUnavailable("the source location cannot be read")

    with pytest.raises(SourceUnavailable) as e:
        curated()
    assert e.value.__context__ is None and e.value.__cause__ is None

    @firewall("stage")
    def unexpected():
        raise UnicodeEncodeError("utf-8", PLANTED, 0, 1, "surrogates not allowed")

    with pytest.raises(ScrubbedError, match=r"^stage failed: internal_error \(UnicodeEncodeError\)$") as e:
        unexpected()
    assert PLANTED not in repr(e.value.__dict__) and e.value.__context__ is None
