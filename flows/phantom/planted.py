"""The identifying values planted in the tree besides the patients' own, and the list of all of them
that must never appear in a workspace outside the private lineage table."""

from __future__ import annotations

from flows.phantom.patients import DEFAULT_PATIENTS, patients

UID_ROOT = "1.2.826.0.1.3680043.10.7731."  # the phantom's UIDs: a de-identifier must replace them
INSTITUTION = "Grimsby Orthopaedic Institute"
INSTITUTION_ADDRESS = "17 Wexcombe Lane, Grimsby"
REFERRING = "Vandersloot^Ulrika"
OPERATOR = "Thistlewood^Cornelius"
STATION = "GRIMSBYORTHO7"
SERIAL = "SN44X0917QZ"
PRIVATE_TEXT = "Private note about Zorblatt"


def planted_values(n: int = DEFAULT_PATIENTS, seed: int = 0) -> list[str]:
    """Identifying strings planted in the tree; none may appear outside the private lineage."""
    values = [INSTITUTION, "Grimsby", "Wexcombe", "Vandersloot", "Thistlewood", STATION, SERIAL, "Zorblatt", UID_ROOT]
    for p in patients(n, seed):
        values += [p.family, p.given, p.patient_id, p.birth_date, p.study_date, p.accession]
    return sorted(set(values))
