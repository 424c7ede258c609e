"""One client for a PACS source, credentials and TLS resolved in the process that uses it (never passed along).

Both clients, DICOMweb (QIDO-RS, WADO-RS) and DIMSE (C-FIND, C-GET or C-MOVE), answer `PacsClient`: the pull
(ingest/pacs/pull.py) and the reader of a batch (ingest/source_kinds.py) know no other."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Protocol, Sequence

from ingest.pacs.dicomweb import DicomWebClient
from ingest.pacs.dimse import DimseClient
from ingest.pacs.options import PacsOptions, parse_location, resolve_secret
from ingest.pacs.study import Instance, Study


class PacsClient(Protocol):
    """An open connection to one archive (a context manager: leaving it closes the connection). Failures: an archive
    that does not answer raises PacsUnavailable, one that refuses raises PacsRefused (ingest/pacs/errors.py), both
    ending the run in one line; one instance or listing that fails raises RetrieveFailed, a quarantine."""

    def __enter__(self) -> PacsClient: ...

    def __exit__(self, *exc) -> None: ...

    def close(self) -> None: ...

    def probe(self) -> None:
        """One small query, so that a wrong address, AE title or credential is refused at `sources add`."""

    def studies(self, filters: dict[str, list[str]]) -> Iterator[Study]:
        """The archive's studies matching the source's --query filters (PacsOptions.filters())."""

    def instances(self, study: str, body_parts: list[str] | None = None) -> list[Instance]:
        """Every instance of one study (of its series of those body parts), all of them or RetrieveFailed."""

    def retrieve(self, inst: Instance, upcoming: Sequence[Instance] = ()) -> bytes:
        """One instance, as stored, into memory; `upcoming`: the instances asked for next (a client may prefetch)."""


def open_client(name: str, location: str, options: PacsOptions, credentials_dir: Path) -> PacsClient:
    where = parse_location(location)
    if where.protocol == "dimse":
        return DimseClient(name, where.host, where.port, where.called_ae, options.calling_ae,
                           retrieve=options.retrieve, move_port=options.move_port, timeout_s=options.timeout_s,
                           retries=options.retries)
    auth = resolve_secret(options.credentials, credentials_dir, "--credentials")
    return DicomWebClient(name, where.url, auth=auth, verify=_verify(options, credentials_dir),
                          timeout_s=options.timeout_s, retries=options.retries)


def _verify(options: PacsOptions, credentials_dir: Path) -> bool | str:
    if not options.tls_verify:
        return False
    if options.tls_ca is None:
        return True
    if options.tls_ca.startswith("file:"):
        path = credentials_dir / options.tls_ca[5:]
        if not path.is_file():
            from ingest.pacs.options import PacsError

            raise PacsError(f"--tls-ca: workspace/private/credentials/{options.tls_ca[5:]} is not a file")
        return str(path)
    return resolve_secret(options.tls_ca, credentials_dir, "--tls-ca")
