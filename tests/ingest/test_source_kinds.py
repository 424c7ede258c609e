"""A source's kind (folder, object store, DICOMweb, DIMSE) answers everything ingest does differently by kind; the
two PACS clients implement one written protocol. (The pulls themselves run against Orthanc in test_pacs.py.)"""

import inspect
import re
from pathlib import Path

import pytest

from ingest.pacs.client import PacsClient
from ingest.pacs.dicomweb import DicomWebClient
from ingest.pacs.dimse import DimseClient
from ingest.pacs.pull import RETRY_REASONS
from ingest.source_kinds import DicomWebKind, DimseKind, FolderKind, ObjectStoreKind, ScanListing
from ingest.sources import Source, SourceError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("location,kind", [
    ("/data/knees", FolderKind), ("s3://bucket/knees", ObjectStoreKind), ("https://host/knees", ObjectStoreKind),
    ("dicomweb+https://pacs:443/dicom-web", DicomWebKind), ("DIMSE://ARCHIVE@pacs:104", DimseKind),
])
def test_a_location_has_one_kind(location, kind):
    assert type(Source("s", location, "internal").location_kind) is kind


def test_only_an_archive_retries_retrievals_waits_for_its_hours_and_limits_its_connections():
    folder = Source("s", "/data/knees", "internal").location_kind
    assert folder.retry_reasons == () and folder.closed_hours() is None and folder.max_in_flight(9) == 9
    assert folder.pull_summary(None) is None and isinstance(folder.listing(None), ScanListing)
    hour = __import__("datetime").datetime.now().hour
    closed = f"{(hour + 2) % 24}-{(hour + 3) % 24}"
    web = Source("s", "dicomweb+http://pacs:8042/dicom-web", "internal",
                 pacs={"max_connections": 3, "hours": closed}).location_kind
    assert web.retry_reasons == RETRY_REASONS and web.closed_hours() == closed and web.max_in_flight(9) == 3
    move = Source("s", "dimse://ARCHIVE@pacs:104", "internal", pacs={"retrieve": "move", "move_port": 11113})
    assert move.location_kind.max_in_flight(9) == 1 and move.location_kind.closed_hours() is None


@pytest.mark.parametrize("source,message", [
    (Source("s", "/data/knees", "internal", pacs={"max_connections": 2}), "PACS options .* need a"),
    (Source("s", "s3://KEY:SECRET@bucket/knees", "internal"), "keys do not belong in the URL"),
    (Source("s", "dimse://ARCHIVE@pacs:104", "internal", labels=["folder:kl_grade"]), "takes no --labels"),
    (Source("s", "dicomweb+http://pacs:8042/dicom-web", "internal", credentials="env:KEYS"), "needs an s3://"),
])
def test_each_kind_refuses_what_does_not_fit_it(source, message):
    with pytest.raises(SourceError, match=message):
        source.validate()


def test_a_folder_is_kept_absolute_and_must_exist(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "knees").mkdir()
    source = Source("s", "knees", "internal")
    source.location_kind.prepare()
    assert source.location == str(tmp_path / "knees")
    with pytest.raises(SourceError, match="not a folder"):
        Source("s", "elsewhere", "internal").location_kind.prepare()


@pytest.mark.parametrize("client", [DicomWebClient, DimseClient])
def test_both_pacs_clients_implement_the_written_protocol(client):
    members = [n for n, f in vars(PacsClient).items() if inspect.isfunction(f)
               and (not n.startswith("_") or n in ("__enter__", "__exit__"))]
    assert {"probe", "studies", "instances", "retrieve", "close", "__enter__", "__exit__"} <= set(members)
    for name in members:
        want = list(inspect.signature(getattr(PacsClient, name)).parameters)
        assert list(inspect.signature(getattr(client, name)).parameters) == want, name


def test_ingest_asks_the_kind_and_nothing_else_tells_a_pacs_apart():
    """`is_pacs` is read where a kind is made, and where the command line routes PACS options before a source
    exists; nowhere else (the ten `if is_pacs` branches this replaced)."""
    users = sorted(str(p.relative_to(ROOT)) for pkg in ("catalog", "ingest", "curation", "shards", "flows")
                   for p in (ROOT / pkg).rglob("*.py") if re.search(r"\bis_pacs\b", p.read_text()))
    assert users == ["flows/cli/sources.py", "ingest/pacs/options.py", "ingest/source_kinds.py"]
