"""The de-identification rules every reader and the DICOM export share (DICOM PS3.15 Annex E, HIPAA safe harbour).

One home, because the readers and the export must agree on every key, shift and cap: an image exported as DICOM
carries the pseudonym, shifted date and age the catalog holds for it. What each one keeps (the readers' attributes,
the export's `KEEP`) is its own allow-list; how a kept value is transformed is decided here:

  identifiers   keyed pseudonyms (HMAC-SHA256 under the workspace secret): the same patient id gives the same key
                in every source and every run, and no key can be reversed without the secret
  UIDs          2.25.<HMAC of the original> (same input, same output)
  dates         shifted by a per-patient offset, never zero (`DATE_KEYWORDS`, the first present is the study's)
  ages          whole days or years, ages over 89 reported as 90
  patient       one identity order for every image (`patient_identity`)
  burned-in     what a header's BurnedInAnnotation declares
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
from typing import Mapping

_SHIFT_RANGE_DAYS = 365
DATE_KEYWORDS = ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate")  # shifted; the study's date first
DAYS_PER_YEAR = 365.25
MAX_AGE_YEARS = 90  # ages over 89 are reported as 90
MAX_AGE_DAYS = int(MAX_AGE_YEARS * DAYS_PER_YEAR)
_AGE_UNIT_DAYS = {"D": 1, "W": 7, "M": DAYS_PER_YEAR / 12, "Y": DAYS_PER_YEAR}


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

    def uid(self, uid: str) -> str:
        """A DICOM UID replaced by one under the 2.25 root (PS3.15 action U): consistent, and a valid UID."""
        digest = hmac.new(self._secret, f"uid\x00{uid}".encode(), hashlib.sha256).digest()
        return f"2.25.{int.from_bytes(digest[:16], 'big')}"

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


def _age_string(value: object) -> tuple[int, str] | None:
    """(count, unit) of an AS value like '045Y'."""
    m = re.match(r"^(\d{1,3})([DWMY])$", str(value or "").strip().upper())
    return (int(m[1]), m[2]) if m else None


def age_days(study_date: object, birth_date: object, age_string: object = None) -> int | None:
    """Age at the study in days, capped at 90 years; from dates, or from an AS value like '045Y'."""
    s, b = parse_da(study_date), parse_da(birth_date)
    days = None
    if s and b and s >= b:
        days = (s - b).days
    elif (age := _age_string(age_string)) is not None:
        days = int(age[0] * _AGE_UNIT_DAYS[age[1]])
    return min(days, MAX_AGE_DAYS) if days is not None else None


def capped_age_string(value: object) -> str | None:
    """An AS value as whole years ('007M' -> '000Y'), capped at '090Y'; None when it is not an age."""
    age = _age_string(value)
    if age is None:
        return None
    return f"{min(int(age[0] * (_AGE_UNIT_DAYS[age[1]] / DAYS_PER_YEAR)), MAX_AGE_YEARS):03d}Y"


def declares_burned_in(value: object) -> bool:
    """Whether a BurnedInAnnotation value says YES (the only value that declares text in the pixels)."""
    return str(value if value is not None else "").strip().upper() == "YES"


# --- Patient identity -------------------------------------------------------------------------------------------
# The patient key, and so the per-patient date shift, of every image; the first rule with a value wins
# (docs/catalog.md, "Patient identity"):
#
#   basis           derived from
#   path_pattern    the source's path pattern group `patient`: the source declared whose file it is
#   patient_id      DICOM PatientID
#   name_birthdate  DICOM PatientName with PatientBirthDate (the name alone when there is no date)
#   exam            the path pattern group `exam`: one exam is one (unknown) patient
#   study           DICOM StudyInstanceUID: likewise
#   file            nothing says who: the file is its own patient
#
# `path_pattern` and `patient_id` share a namespace, so a PNG whose path names patient 9001234 and a DICOM whose
# PatientID is 9001234 are one patient, with one date shift.

HEADER_FIELDS = ("PatientID", "PatientName", "PatientBirthDate", "StudyInstanceUID")


def _present(value: object) -> bool:
    return value is not None and bool(str(value).strip())


def patient_identity(pseudo: Pseudonymizer, file_id: str, hints: Mapping[str, object],
                     header: Mapping[str, object] | None = None) -> tuple[str, str]:
    """(patient_key, basis) from path hints and the header's HEADER_FIELDS (absent for NIfTI and rasters)."""
    header = header or {}
    if _present(hints.get("patient")):
        return pseudo.patient(hints["patient"]), "path_pattern"
    if _present(header.get("PatientID")):
        return pseudo.patient(header["PatientID"]), "patient_id"
    if _present(header.get("PatientName")):
        birth = header.get("PatientBirthDate") if _present(header.get("PatientBirthDate")) else ""
        return pseudo.patient(f"{header['PatientName']}|{birth}"), "name_birthdate"
    if _present(hints.get("exam")):
        return pseudo.key("patient-of-exam", hints["exam"]), "exam"
    if _present(header.get("StudyInstanceUID")):
        return pseudo.key("patient-of-study", header["StudyInstanceUID"]), "study"
    return pseudo.key("patient-of-file", file_id), "file"


def study_key(pseudo: Pseudonymizer, hints: Mapping[str, object], study_uid: object = None) -> str | None:
    """The study's pseudonym: from its StudyInstanceUID, else from the path's `exam` group, else unknown."""
    if study_uid:
        return pseudo.study(study_uid)
    return pseudo.study(hints["exam"]) if hints.get("exam") else None
