"""PACS source settings without an archive: locations, filters, hours, credentials (values never in messages)."""

from __future__ import annotations

import datetime as dt

import pytest

from catalog.errors import OrthoError
from ingest.pacs.options import PacsOptions, parse_location, resolve_secret
from ingest.run import ingest_source
from ingest.sources import Source, add_source


def test_locations_parse_and_refuse_credentials():
    web = parse_location("dicomweb+https://pacs.example.org/dicom-web/")
    assert (web.protocol, web.url, web.port) == ("dicomweb", "https://pacs.example.org/dicom-web", 443)
    dimse = parse_location("dimse://KNEE_PACS@10.1.2.3:11112")
    assert (dimse.protocol, dimse.called_ae, dimse.host, dimse.port) == ("dimse", "KNEE_PACS", "10.1.2.3", 11112)
    for bad, why in (("dimse://10.1.2.3:104", "CALLED_AE@host:port"), ("dimse://AE@host", "CALLED_AE@host:port"),
                     ("dicomweb+http://user:pw@host/dicom-web", "credentials do not belong"),
                     ("dimse://THIS_AE_TITLE_IS_TOO_LONG@host:104", "1 to 16 characters")):
        with pytest.raises(OrthoError, match=why):
            parse_location(bad)


def test_filters_are_normalised_and_checked():
    options = PacsOptions(queries=["ModalitiesInStudy=dx, MR", "StudyDate=20190101-", "StudyDescription=Knee,HIP",
                                   "BodyPartExamined=knee"])
    assert options.filters() == {"ModalitiesInStudy": ["DX", "MR"], "StudyDate": ["20190101-"],
                                 "StudyDescription": ["knee", "hip"], "BodyPartExamined": ["KNEE"]}
    for bad, why in (("ModalitiesInStudy=XR", "not a DICOM modality"), ("StudyDate=20191340-", "not a date"),
                     ("StudyDate=2019010120190102", "date or range"), ("PatientID=123", "expected KEY=VALUE"),
                     ("StudyDescription=", "no value")):
        with pytest.raises(OrthoError, match=why):
            PacsOptions(queries=[bad]).filters()


@pytest.mark.parametrize("hours,hour,inside", [("21-07", 22, True), ("21-07", 3, True), ("21-07", 7, False),
                                               ("21-07", 12, False), ("01-05", 2, True), ("01-05", 6, False)])
def test_pull_hours_wrap_past_midnight(hours, hour, inside):
    assert PacsOptions(hours=hours).in_window(dt.datetime(2026, 12, 1, hour, 30)) is inside


def test_a_pull_outside_its_hours_does_not_start(ws):
    now = dt.datetime.now().hour
    closed = f"{(now + 1) % 24:02d}-{(now + 2) % 24:02d}"
    add_source(ws, Source("night", "dicomweb+http://127.0.0.1:9/dicom-web", "internal", pacs={"hours": closed}),
               probe=False)
    summary = ingest_source(ws, "night")
    assert summary.skipped == f"outside its pull hours {closed}" and summary.result.files == 0


def test_secrets_come_from_env_or_the_private_area_and_messages_name_only_the_reference(ws, monkeypatch):
    (ws.private_dir / "credentials").mkdir()
    (ws.private_dir / "credentials" / "pacs.txt").write_text("reader:s3cr3t-value\n")
    assert resolve_secret("file:pacs.txt", ws.credentials_dir, "--credentials") == "reader:s3cr3t-value"
    monkeypatch.setenv("PACS_TOKEN", "Bearer abc")
    assert resolve_secret("env:PACS_TOKEN", ws.credentials_dir, "--credentials") == "Bearer abc"
    with pytest.raises(OrthoError, match="PACS_MISSING is not set"):
        resolve_secret("env:PACS_MISSING", ws.credentials_dir, "--credentials")
    with pytest.raises(OrthoError, match="env:NAME or file:NAME"):
        add_source(ws, Source("p", "dicomweb+http://h/dicom-web", "internal", pacs={"credentials": "s3cr3t"}),
                   probe=False)
    with pytest.raises(OrthoError, match="DICOMweb options"):
        add_source(ws, Source("p", "dimse://AE@h:104", "internal", pacs={"credentials": "env:X"}), probe=False)
    with pytest.raises(OrthoError, match="--move-port"):
        add_source(ws, Source("p", "dimse://AE@h:104", "internal", pacs={"retrieve": "move"}), probe=False)


def test_a_series_listed_short_is_listed_again_and_never_passed_off_as_whole():
    from ingest.pacs.errors import RetrieveFailed
    from ingest.pacs.study import Instance, checked_listing

    whole = [Instance("1.2", "1.2.3", f"1.2.3.{i}") for i in range(5)]
    answers = iter([whole[:2] + whole[3:], whole[1:]])  # a response lost in each of two queries
    assert sorted(i.sop for i in checked_listing(lambda: next(answers), 5, "series")) == [i.sop for i in whole]
    assert len(checked_listing(lambda: whole[:3], 0, "series")) == 3  # the archive gave no count: trusted
    with pytest.raises(RetrieveFailed, match="4 of 5 instances") as e:
        checked_listing(lambda: whole[:4], 5, "series")
    assert e.value.reason == "pacs_incomplete_listing"
