"""One patient identity: the patient key, and so the per-patient date shift, of every image.

Every reader and the DICOM export derive it here; the first rule with a value wins
(docs/catalog.md, "Patient identity"):

  basis           derived from
  path_pattern    the source's path pattern group `patient`: the source declared whose file it is
  patient_id      DICOM PatientID
  name_birthdate  DICOM PatientName with PatientBirthDate (the name alone when there is no date)
  exam            the path pattern group `exam`: one exam is one (unknown) patient
  study           DICOM StudyInstanceUID: likewise
  file            nothing says who: the file is its own patient

`path_pattern` and `patient_id` share a namespace, so a PNG whose path names patient 9001234 and a
DICOM whose PatientID is 9001234 are one patient, with one date shift.
"""

from __future__ import annotations

from typing import Mapping

from catalog.deid import Pseudonymizer

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
