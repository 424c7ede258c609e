"""What `ortho sources add` records for a PACS source, checked before anything is saved.

A location names the protocol and the archive; the options say what to pull and how gently:

    dicomweb+http://host:8042/dicom-web   (or dicomweb+https://)   QIDO-RS to find, WADO-RS to retrieve
    dimse://CALLED_AE@host:104                                      C-FIND to find, C-GET or C-MOVE to retrieve

Credentials and TLS files are never stored here, only where to find them: `env:NAME` (an environment variable)
or `file:NAME` (workspace/private/credentials/NAME).
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from catalog import vocab
from catalog.errors import OrthoError

SCHEMES = ("dicomweb+http", "dicomweb+https", "dimse")
QUERY_KEYS = {
    "ModalitiesInStudy": "modality codes, comma separated (DX,CR,MR)",
    "StudyDate": "a DICOM date or range: 20190314, 20190101-, -20191231 or 20190101-20191231",
    "StudyDescription": "terms, comma separated; a study matches when its description contains one (any case)",
    "BodyPartExamined": "body parts, comma separated (KNEE,HIP); matched per series",
}
_AE = re.compile(r"^[\x21-\x7e](?:[\x20-\x7e]{0,14}[\x21-\x7e])?$")  # 1-16 printable characters, no backslash
_DATE_RANGE = re.compile(r"^(\d{8})?-?(\d{8})?$")
_CREDENTIAL_REF = re.compile(r"^(env|file):([A-Za-z0-9_.-]{1,128})$")


FIRST_BACKOFF_S = 0.25  # the first wait before a request is tried again, doubled at each further try


class PacsError(OrthoError, ValueError):
    pass


@dataclass(frozen=True)
class PacsLocation:
    protocol: str  # dicomweb | dimse
    host: str
    port: int
    url: str | None = None  # dicomweb: the service's base URL (http or https)
    called_ae: str | None = None  # dimse: the archive's AE title


def is_pacs(location: str) -> bool:
    return location.split("://", 1)[0].lower() in SCHEMES if "://" in location else False


def parse_location(location: str) -> PacsLocation:
    parts = urlsplit(location)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise PacsError(f"PACS location: expected {', '.join(s + '://' for s in SCHEMES)}")
    if parts.password is not None or (scheme != "dimse" and parts.username is not None):
        raise PacsError("PACS location: credentials do not belong in the location; use --credentials env:NAME "
                        "or file:NAME")
    if not parts.hostname:
        raise PacsError("PACS location: no host")
    try:
        port = parts.port
    except ValueError:
        raise PacsError("PACS location: the port is not a number from 1 to 65535") from None
    if scheme == "dimse":
        if port is None or not parts.username or not _AE.match(parts.username) or "\\" in parts.username:
            raise PacsError("PACS location: expected dimse://CALLED_AE@host:port (an AE title of 1 to 16 characters)")
        return PacsLocation("dimse", parts.hostname, port, called_ae=parts.username)
    http = scheme.split("+", 1)[1]
    path = parts.path.rstrip("/")
    netloc = parts.netloc
    return PacsLocation("dicomweb", parts.hostname, port or (443 if http == "https" else 80),
                        url=f"{http}://{netloc}{path}")


@dataclass
class PacsOptions:
    queries: list[str] = field(default_factory=list)  # KEY=VALUE filters (QUERY_KEYS)
    calling_ae: str = "ORTHO"
    retrieve: str = "get"  # dimse: get (C-GET) | move (C-MOVE to a Storage SCP on move_port)
    move_port: int | None = None
    max_connections: int = 4
    hours: str | None = None  # "21-07": pull only from 21:00 to 07:00, local time
    credentials: str | None = None  # env:NAME | file:NAME holding "user:password" or "Bearer TOKEN"
    tls_ca: str | None = None  # env:NAME (a path) | file:NAME (a PEM bundle in the private area)
    tls_verify: bool = True
    timeout_s: float = 30.0
    retries: int = 3  # attempts per request, with exponential backoff

    @classmethod
    def from_dict(cls, d: dict | None) -> "PacsOptions":
        return cls(**(d or {}))

    def as_dict(self) -> dict:
        return asdict(self)

    def validate(self, location: PacsLocation) -> "PacsOptions":
        self.filters()
        if not _AE.match(self.calling_ae) or "\\" in self.calling_ae:
            raise PacsError("--calling-ae: an AE title of 1 to 16 printable characters, no backslash")
        if self.retrieve not in ("get", "move"):
            raise PacsError("--retrieve: expected get or move")
        if self.move_port is not None and not 1 <= self.move_port <= 65535:
            raise PacsError("--move-port: a port from 1 to 65535")
        if location.protocol == "dimse" and self.retrieve == "move" and self.move_port is None:
            raise PacsError("--retrieve move needs --move-port: the port of the Storage SCP the pull starts "
                            "(the archive must know it under the calling AE title)")
        if location.protocol == "dicomweb" and (self.retrieve != "get" or self.move_port is not None):
            raise PacsError("--retrieve and --move-port are DIMSE options; DICOMweb retrieves with WADO-RS")
        if location.protocol == "dimse" and (self.credentials or self.tls_ca):
            raise PacsError("--credentials and --tls-ca are DICOMweb options; a DIMSE archive admits by AE title")
        if not 1 <= self.max_connections <= 64:
            raise PacsError("--max-connections: from 1 to 64")
        if self.hours is not None:
            self.window()
        for name, ref in (("--credentials", self.credentials), ("--tls-ca", self.tls_ca)):
            if ref is not None and not _CREDENTIAL_REF.match(ref):
                raise PacsError(f"{name}: expected env:NAME or file:NAME (a file in workspace/private/credentials)")
        if not 1 <= self.retries <= 10 or not 0 < self.timeout_s <= 600:
            raise PacsError("retries from 1 to 10 and a timeout from 0 to 600 seconds")
        return self

    @property
    def connections(self) -> int:
        """C-MOVE sends every instance to one port: one retrieval at a time."""
        return 1 if self.retrieve == "move" else self.max_connections

    def filters(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for text in self.queries:
            key, sep, value = text.partition("=")
            key, value = key.strip(), value.strip()
            if not sep or key not in QUERY_KEYS:
                raise PacsError(f"--query {key or text!r}: expected KEY=VALUE with KEY one of {', '.join(QUERY_KEYS)}")
            if key in out:
                raise PacsError(f"--query {key}: given twice")
            values = [v.strip() for v in value.split(",") if v.strip()]
            if not values:
                raise PacsError(f"--query {key}: no value ({QUERY_KEYS[key]})")
            out[key] = _check_filter(key, values)
        return out

    def window(self) -> tuple[int, int]:
        m = re.match(r"^(\d{1,2})-(\d{1,2})$", self.hours or "")
        if not m or not all(0 <= int(h) <= 23 for h in m.groups()) or m.group(1) == m.group(2):
            raise PacsError("--hours: expected START-END in whole hours, e.g. 21-07 (21:00 to 07:00)")
        return int(m.group(1)), int(m.group(2))

    def in_window(self, now: dt.datetime | None = None) -> bool:
        if self.hours is None:
            return True
        start, end = self.window()
        hour = (now or dt.datetime.now()).hour
        return start <= hour < end if start < end else hour >= start or hour < end


def _check_filter(key: str, values: list[str]) -> list[str]:
    if key == "ModalitiesInStudy":
        bad = [v for v in values if not vocab.modality(v)]
        if bad:
            raise PacsError(f"--query ModalitiesInStudy: {bad[0]!r} is not a DICOM modality code (CR, DX, MR, ...)")
        return [vocab.modality(v) for v in values]
    if key == "StudyDate":
        m = _DATE_RANGE.match(values[0]) if len(values) == 1 else None
        if not m or not any(m.groups()) or ("-" not in values[0] and m.group(2)):
            raise PacsError(f"--query StudyDate: {QUERY_KEYS[key]}")
        for d in m.groups():
            if d:
                try:
                    dt.datetime.strptime(d, "%Y%m%d")
                except ValueError:
                    raise PacsError(f"--query StudyDate: {d} is not a date (YYYYMMDD)") from None
        return values
    if key == "BodyPartExamined":
        bad = [v for v in values if not re.match(r"^[A-Za-z0-9 _-]{1,16}$", v)]
        if bad:
            raise PacsError("--query BodyPartExamined: DICOM body part terms (KNEE, HIP, ...), 16 characters at most")
        return [v.upper() for v in values]
    if any(len(v) > 64 or "\\" in v for v in values):
        raise PacsError("--query StudyDescription: terms of at most 64 characters")
    return [v.lower() for v in values]


def is_secret_ref(ref: str) -> bool:
    """env:NAME or file:NAME (the value itself never stands in a setting)."""
    return bool(_CREDENTIAL_REF.match(ref))


def resolve_secret(ref: str | None, credentials_dir: Path, what: str) -> str | None:
    """The value behind env:NAME or file:NAME; the error names the reference, never the value."""
    if ref is None:
        return None
    kind, name = _CREDENTIAL_REF.match(ref).groups()
    if kind == "env":
        value = os.environ.get(name)
        if value is None:
            raise PacsError(f"{what}: the environment variable {name} is not set")
        return value
    path = credentials_dir / name
    try:
        return path.read_text().strip()
    except OSError:
        raise PacsError(f"{what}: workspace/private/credentials/{name} cannot be read") from None
