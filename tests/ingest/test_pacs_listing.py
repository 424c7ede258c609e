"""A pull marks a study complete only when it listed as many instances as the archive counts for the study: a
series answer lost on the way (seen under load over DIMSE) is listed again, and a study still short stays failed.
The archive is a fake client at the edge; the pull's own planning and state run for real."""

from __future__ import annotations

import pytest

import ingest.pacs.pull as pull
from catalog.workspace import Workspace
from ingest.pacs.options import PacsOptions
from ingest.pacs.study import Instance, Study

STUDY = "1.2.3"
SERIES = {"1.2.3.1": ["1.2.3.1.1", "1.2.3.1.2"], "1.2.3.2": ["1.2.3.2.1", "1.2.3.2.2"]}


class Archive:
    """Two series of two instances; the first `drop` series listings each lose the second series."""

    def __init__(self, drop: int):
        self.drop, self.listings = drop, 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def studies(self, filters):
        return iter([Study(STUDY, 4)])

    def instances(self, study, body_parts=None):
        self.listings += 1
        series = list(SERIES)[:1] if self.listings <= self.drop else list(SERIES)
        return [Instance(study, s, sop) for s in series for sop in SERIES[s]]


def plan(tmp_path, monkeypatch, archive: Archive, queries=()):
    monkeypatch.setattr(pull, "open_client", lambda *a, **k: archive)
    listing = pull.PacsListing(Workspace.open(tmp_path / "w"), "pacs", "dicom://ORTHANC@127.0.0.1:4242",
                               PacsOptions(queries=list(queries)))
    entries = [e.relpath for e in listing.entries()]
    (study_plan,) = listing.planned.values()
    return entries, study_plan, listing


@pytest.mark.parametrize("drop", [1, 2])
def test_a_series_lost_from_the_listing_is_listed_again(tmp_path, monkeypatch, drop):
    entries, study_plan, _ = plan(tmp_path, monkeypatch, archive := Archive(drop))
    assert len(entries) == 4 and study_plan.reason is None and archive.listings == drop + 1


def test_a_study_still_short_is_pulled_in_part_and_stays_failed(tmp_path, monkeypatch):
    entries, study_plan, listing = plan(tmp_path, monkeypatch, Archive(drop=99))
    assert len(entries) == 2 and study_plan.reason == "pacs_incomplete_listing"
    outcome = listing.finish("run-1")
    assert outcome["failed"] == 1 and outcome["complete"] == 0
    (state,) = listing.state.studies.values()
    assert state["status"] == "failed" and state["reason"] == "pacs_incomplete_listing"


def test_with_a_body_part_filter_the_study_count_is_not_expected(tmp_path, monkeypatch):
    entries, study_plan, _ = plan(tmp_path, monkeypatch, archive := Archive(drop=99),
                                  queries=["BodyPartExamined=KNEE"])
    assert len(entries) == 2 and study_plan.reason is None and archive.listings == 1
