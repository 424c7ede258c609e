"""Keyed pseudonyms and shifted dates (DICOM PS3.15 Annex E: replace identifiers, shift dates).

Identity becomes HMAC-SHA256 under the workspace secret: the same patient id gives the same
key in every source and every run, and the key cannot be reversed without the secret. The
ground floor owns them because the readers and the export must agree on every key and shift.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re

_SHIFT_RANGE_DAYS = 365


class Pseudonymizer:
    def __init__(self, secret: bytes):
        self._secret = secret

    def key(self, namespace: str, value: object, length: int = 16) -> str:
        msg = f"{namespace}\x00{str(value).strip()}".encode("utf-8", "surrogateescape")
        return hmac.new(self._secret, msg, hashlib.sha256).hexdigest()[:length]

    def patient(self, patient_id: object) -> str:
        return self.key("patient", patient_id)

    def study(self, uid: object) -> str:
        return self.key("study", uid)

    def series(self, uid: object) -> str:
        return self.key("series", uid)

    def file_id(self, source: str, relpath: str) -> str:
        return self.key("file", f"{source}\x00{relpath}")

    def date_shift_days(self, patient_key: str) -> int:
        """A per-patient offset in [-365, -1] U [1, 365]: never zero, so no true date survives."""
        n = int(self.key("dateshift", patient_key, 8), 16) % (2 * _SHIFT_RANGE_DAYS)
        return n - _SHIFT_RANGE_DAYS if n < _SHIFT_RANGE_DAYS else n - _SHIFT_RANGE_DAYS + 1

    def shifted_date(self, value: object, patient_key: str) -> dt.date | None:
        d = parse_da(value)
        return d + dt.timedelta(days=self.date_shift_days(patient_key)) if d else None


def parse_da(value: object) -> dt.date | None:
    text = str(value or "").strip()
    m = re.match(r"^(\d{4})\.?(\d{2})\.?(\d{2})", text)
    if not m:
        return None
    try:
        d = dt.date(int(m[1]), int(m[2]), int(m[3]))
    except ValueError:
        return None
    return d if 1900 <= d.year <= 2200 else None
