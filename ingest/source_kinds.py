"""What kind of place a source is: a folder, an object store, a DICOMweb or a DIMSE archive.

Ingest asks a source for its kind once (`Source.location_kind`) and the kind answers everything that differs between
them: what registering checks, when a run may start, how the files are listed and read, which quarantines a re-run
retries, how many reads run at once, and what `ortho status` reports of its pulls. The two archive kinds differ only
in their client, and the clients share one written protocol (ingest/pacs/client.py `PacsClient`).
(`Source.kind`, internal | public | phantom, says whose images they are; this says where they are.)
"""

from __future__ import annotations

import contextlib
import os
import re
from typing import Callable, Iterable, Iterator

from catalog.files import is_remote, local_path, read_bytes
from catalog.workspace import Workspace
from ingest.pacs.options import is_pacs, parse_location
from ingest.scan import ScanEntry, scan
from ingest.source_errors import SourceError

# `Source` (ingest/sources.py) in annotations only: that module asks this one for a source's kind

_USERINFO = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/@]*@")  # s3://KEY:SECRET@bucket
Read = Callable[[str, int], bytes]  # read(relpath, max_bytes)


class SourceKind:
    """The interface ingest asks, with the answers of a place that is scanned and read through fsspec."""

    name: str
    retry_reasons: tuple[str, ...] = ()  # quarantines a re-run reads again without --retry-quarantined

    def __init__(self, source: Source):
        self.source = source

    def prepare(self) -> None:
        """Before registering: the location as it is to be kept."""

    def validate(self) -> None:
        if self.source.pacs:
            raise SourceError("PACS options (--query, --calling-ae, ...) need a dicomweb+http(s):// or dimse:// "
                              "location")

    def probe(self, ws: Workspace) -> None:
        """Before registering: one request to the place, where a wrong address or credential shows at once."""

    def closed_hours(self) -> str | None:
        """The source's pull hours when now is outside them (the run does not start); None when it may run."""
        return None

    def max_in_flight(self, requested: int) -> int:
        return requested

    def listing(self, ws: Workspace) -> "ScanListing":
        return ScanListing(ws, self.source)

    @contextlib.contextmanager
    def reader(self, ws: Workspace, relpaths: list[str]) -> Iterator[Read]:
        """`read(relpath, max_bytes)` for a batch's `relpaths`, opened in the process that runs the batch."""
        options = self.source.storage_options(ws.credentials_dir)
        location = self.source.location
        yield lambda relpath, max_bytes: read_bytes(location, relpath, max_bytes, options)

    def pull_summary(self, ws: Workspace) -> dict | None:
        """What `ortho status` shows of the source's pulls (an archive's); None for a place that is scanned."""
        return None


class FolderKind(SourceKind):
    """A folder on this machine (or a mounted share)."""

    name = "folder"

    def prepare(self) -> None:
        """A folder is kept as its absolute path, and must be one (a phantom's is drawn at its first ingest)."""
        self.source.location = os.path.abspath(local_path(self.source.location))
        if self.source.kind != "phantom" and not os.path.isdir(self.source.location):
            raise SourceError(f"source {self.source.name!r}: location is not a folder")


class ObjectStoreKind(SourceKind):
    """An object store or a web server (s3://, https://, ...)."""

    name = "object_store"

    def validate(self) -> None:
        super().validate()
        if _USERINFO.match(self.source.location):
            raise SourceError("object store location: keys do not belong in the URL; use --credentials env:NAME "
                              "or file:NAME")


class ArchiveKind(SourceKind):
    """A PACS: its studies are queried, its instances retrieved into memory; nothing of it is scanned."""

    @property
    def retry_reasons(self) -> tuple[str, ...]:
        from ingest.pacs.pull import RETRY_REASONS

        return RETRY_REASONS

    def validate(self) -> None:
        if self.source.labels or self.source.path_pattern:
            raise SourceError("a PACS source takes no --labels or --path-pattern: its instances carry no file paths")
        self.source.pacs_options.validate(parse_location(self.source.location))

    def probe(self, ws: Workspace) -> None:
        probe_archive(ws, self.source)

    def closed_hours(self) -> str | None:
        options = self.source.pacs_options
        return None if options.in_window() else options.hours

    def max_in_flight(self, requested: int) -> int:
        return min(requested, self.source.pacs_options.connections)  # at most --max-connections retrievals at once

    def listing(self, ws: Workspace):
        from ingest.pacs.pull import PacsListing

        return PacsListing(ws, self.source.name, self.source.location, self.source.pacs_options)

    @contextlib.contextmanager
    def reader(self, ws: Workspace, relpaths: list[str]) -> Iterator[Read]:
        """Each instance retrieved over one connection; the client may fetch a few of the ones that follow in the same
        request."""
        from ingest.pacs.client import open_client
        from ingest.pacs.study import Instance

        order = {r: i for i, r in enumerate(relpaths)}
        source = self.source
        with open_client(source.name, source.location, source.pacs_options, ws.credentials_dir) as client:
            def read(relpath: str, max_bytes: int) -> bytes:
                at = order.get(relpath, len(relpaths))
                upcoming = [Instance.from_relpath(r) for r in relpaths[at + 1:at + 16]]
                return client.retrieve(Instance.from_relpath(relpath), upcoming)

            yield read

    def pull_summary(self, ws: Workspace) -> dict | None:
        from ingest.pacs.pull import PullState

        return PullState.load(ws, self.source.name).summary()


class DicomWebKind(ArchiveKind):
    name = "dicomweb"


class DimseKind(ArchiveKind):
    name = "dimse"


class ScanListing:
    """A folder's or an object store's files, listed by a scan (the label files left out); nothing to record after."""

    def __init__(self, ws: Workspace, source: Source):
        self.ws, self.source = ws, source

    def entries(self) -> Iterable[ScanEntry]:
        source = self.source
        return scan(source.location, skip=source.label_files,
                    storage_options=source.storage_options(self.ws.credentials_dir))

    def finish(self, run_id: str) -> dict | None:
        return None


def kind_of(source: Source) -> SourceKind:
    if is_pacs(source.location):
        return DimseKind(source) if source.location.lower().startswith("dimse://") else DicomWebKind(source)
    return ObjectStoreKind(source) if is_remote(source.location) else FolderKind(source)


def probe_archive(ws: Workspace, source: Source) -> None:
    from ingest.pacs.client import open_client
    from ingest.pacs.errors import PacsRefused, PacsUnavailable
    from ingest.reasons import Quarantine

    try:
        with open_client(source.name, source.location, source.pacs_options, ws.credentials_dir) as client:
            client.probe()
    except Quarantine as q:  # the archive answered, but not as a PACS should
        raise SourceError(f"source {source.name!r}: the archive's answer to a test query failed ({q.reason}: "
                          f"{q.detail}); nothing was registered") from None
    except PacsRefused as e:
        raise SourceError(f"{e}; nothing was registered") from None
    except PacsUnavailable:
        raise SourceError(f"source {source.name!r}: no archive answers at that location; nothing was registered") \
            from None
