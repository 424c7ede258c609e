"""DICOMweb: QIDO-RS to find studies, series and instances; WADO-RS to retrieve one instance into memory.

Every request is retried with exponential backoff on a dropped connection, a timeout, 429 or 5xx. An archive that
stays unreachable ends the pull (PacsUnavailable); an instance the archive keeps refusing is quarantined with a
stable reason, and its study is retried on the next run.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Iterator, Sequence
from urllib.parse import urlencode, urlsplit

import certifi
import urllib3

from ingest.pacs.errors import PacsRefused, PacsUnavailable, RetrieveFailed
from ingest.pacs.options import FIRST_BACKOFF_S, PacsOptions
from ingest.pacs.study import Instance, Study, checked_listing, tag_value

# urllib3 logs every request line at debug level, and a WADO-RS path holds study, series and instance UIDs
logging.getLogger("urllib3.connectionpool").setLevel(logging.WARNING)
PAGE = 500  # QIDO page size (limit/offset)
_RETRY_STATUS = {429, 500, 502, 503, 504}
_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)
_RETRIEVE = 'multipart/related; type="application/dicom"; transfer-syntax=*'  # as stored: no transcoding


class DicomWebClient:
    def __init__(self, name: str, url: str, *, auth: str | None = None, verify: bool | str = True,
                 timeout_s: float = PacsOptions.timeout_s, retries: int = PacsOptions.retries,
                 backoff_s: float = FIRST_BACKOFF_S):
        self.name, self.url = name, url.rstrip("/")
        self.retries, self.backoff_s = retries, backoff_s
        self.path = urlsplit(self.url).path
        tls = {} if not self.url.startswith("https") else (
            {"cert_reqs": "CERT_NONE"} if verify is False else
            {"cert_reqs": "CERT_REQUIRED", "ca_certs": verify if isinstance(verify, str) else certifi.where()})
        # urllib3 itself, one kept-alive connection (requests adds about a millisecond a request); no proxy from
        # the environment between us and the archive; our own retries
        self.pool = urllib3.connection_from_url(self.url, maxsize=1, retries=False, timeout=timeout_s, **tls)
        self.headers = {"Authorization": _authorization(auth)} if auth else {}

    def close(self) -> None:
        self.pool.close()

    def __enter__(self) -> "DicomWebClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def probe(self) -> None:
        """One small query: refuses bad credentials or a wrong path at `sources add`."""
        self._json("/studies", {"limit": "1"})

    def studies(self, filters: dict[str, list[str]]) -> Iterator[Study]:
        for modality in filters.get("ModalitiesInStudy") or [None]:
            params: dict = {"includefield": ["00081030", "00201208", "00080061"]}
            if modality:
                params["ModalitiesInStudy"] = modality
            if "StudyDate" in filters:
                params["StudyDate"] = filters["StudyDate"][0]
            offset = 0
            while True:
                page = self._json("/studies", {**params, "limit": str(PAGE), "offset": str(offset)})
                for item in page:
                    uid = tag_value(item, "0020000D")
                    if uid:
                        yield Study(uid, int(tag_value(item, "00201208") or 0), tag_value(item, "00081030") or "")
                if len(page) < PAGE:
                    break
                offset += len(page)

    def instances(self, study: str, body_parts: list[str] | None = None) -> list[Instance]:
        out: list[Instance] = []
        for item in self._json(f"/studies/{study}/series", {"includefield": ["00180015", "00201209"]}):
            series = tag_value(item, "0020000E")
            if not series or (body_parts and (tag_value(item, "00180015") or "").upper() not in body_parts):
                continue
            path = f"/studies/{study}/series/{series}/instances"
            out += checked_listing(lambda p=path, s=series: self._instances(p, study, s),
                                   int(tag_value(item, "00201209") or 0), "series")
        return out

    def _instances(self, path: str, study: str, series: str) -> list[Instance]:
        out = []
        for item in self._json(path, {"includefield": "0020000E"}):
            sop = tag_value(item, "00080018")
            if sop:
                out.append(Instance(study, tag_value(item, "0020000E") or series, sop))
        return out

    def retrieve(self, inst: Instance, upcoming: Sequence[Instance] = ()) -> bytes:
        """One instance, as stored (`upcoming` is for DIMSE's prefetch; WADO-RS asks one at a time)."""
        path = f"/studies/{inst.study}/series/{inst.series}/instances/{inst.sop}"
        response = self._get(path, None, _RETRIEVE)
        return first_part(response.data, response.headers.get("Content-Type", ""))

    def _json(self, path: str, params: dict) -> list[dict]:
        response = self._get(path, params, "application/dicom+json")
        if response.status == 204 or not response.data:
            return []
        try:
            data = json.loads(response.data)
        except ValueError:
            raise RetrieveFailed("pacs_bad_response", "a QIDO answer that is not JSON") from None
        return data if isinstance(data, list) else []

    def _get(self, path: str, params: dict | None, accept: str) -> urllib3.BaseHTTPResponse:
        url = self.path + path + ("?" + urlencode(params, doseq=True) if params else "")
        headers = {**self.headers, "Accept": accept}
        delay, last = self.backoff_s, "no answer"
        for attempt in range(self.retries):
            if attempt:
                time.sleep(delay)
                delay *= 2
            try:
                response = self.pool.request("GET", url, headers=headers)
            except urllib3.exceptions.SSLError:
                raise PacsRefused(f"source {self.name!r}: the TLS handshake failed (certificate or --tls-ca)") from None
            except urllib3.exceptions.HTTPError as e:  # refused, reset, timed out, cut short
                last = "ConnectionError" if isinstance(e, urllib3.exceptions.NewConnectionError) else type(e).__name__
                continue
            if response.status in (401, 403):
                raise PacsRefused(f"source {self.name!r}: the archive refused the credentials "
                                  f"(HTTP {response.status}); see --credentials")
            if response.status in _RETRY_STATUS:
                last = f"HTTP {response.status}"
                continue
            if response.status >= 400:
                raise RetrieveFailed("pacs_retrieve_failed", f"HTTP {response.status}")
            return response
        if last.startswith("HTTP"):
            raise RetrieveFailed("pacs_retrieve_failed", f"{last} after {self.retries} attempts")
        raise PacsUnavailable(f"source {self.name!r}: the archive does not answer ({last} after {self.retries} "
                              f"attempts); the pull stopped and resumes where it was on the next ingest")


def first_part(body: bytes, content_type: str) -> bytes:
    """The first part of a multipart/related answer (one instance), or the body when it is not multipart."""
    m = _BOUNDARY.search(content_type)
    if not content_type.lower().startswith("multipart/") or not m:
        return body
    delimiter = b"--" + m.group(1).encode()
    start = body.find(delimiter)
    if start < 0:
        raise RetrieveFailed("pacs_bad_response", "a multipart answer without its boundary")
    head_end = body.find(b"\r\n\r\n", start)
    end = body.find(b"\r\n" + delimiter, head_end)
    if head_end < 0 or end < 0:
        raise RetrieveFailed("pacs_bad_response", "a multipart answer cut short")
    return body[head_end + 4:end]


def _authorization(auth: str) -> str:
    if auth.lower().startswith("bearer "):
        return "Bearer " + auth[7:].strip()
    import base64

    return "Basic " + base64.b64encode(auth.encode()).decode()
