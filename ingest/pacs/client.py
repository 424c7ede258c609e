"""One client for a PACS source, credentials and TLS resolved in the process that uses it (never passed along)."""

from __future__ import annotations

from pathlib import Path

from ingest.pacs.dicomweb import DicomWebClient
from ingest.pacs.dimse import DimseClient
from ingest.pacs.options import PacsOptions, parse_location, resolve_secret


def open_client(name: str, location: str, options: PacsOptions, credentials_dir: Path) -> DicomWebClient | DimseClient:
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
