"""One patient identity: the documented order, and keys shared across bases that name the same patient."""

import pytest

from catalog.deid import patient_identity
from catalog.deid import Pseudonymizer

P = Pseudonymizer(b"s" * 32)
FULL = {"PatientID": "PID1", "PatientName": "Doe^Jane", "PatientBirthDate": "19600102", "StudyInstanceUID": "1.2.3"}


@pytest.mark.parametrize("hints, header, basis", [
    ({"patient": "9001234", "exam": "E7"}, FULL, "path_pattern"),
    ({"exam": "E7"}, FULL, "patient_id"),
    ({"exam": "E7"}, {**FULL, "PatientID": "  "}, "name_birthdate"),
    ({"exam": "E7"}, {"StudyInstanceUID": "1.2.3"}, "exam"),
    ({}, {"PatientName": "", "StudyInstanceUID": "1.2.3"}, "study"),
    ({"patient": ""}, {}, "file"),
])
def test_the_first_rule_with_a_value_wins(hints, header, basis):
    assert patient_identity(P, "f" * 16, hints, header)[1] == basis


def test_a_declared_patient_and_a_patient_id_of_the_same_value_are_one_patient():
    by_path = patient_identity(P, "a" * 16, {"patient": "9001234"})
    by_header = patient_identity(P, "b" * 16, {}, {"PatientID": "9001234"})
    assert by_path[0] == by_header[0] == P.patient("9001234")
    assert P.date_shift_days(by_path[0]) == P.date_shift_days(by_header[0])


def test_keys_of_the_old_dicom_order_are_unchanged():
    # the DICOM reader's keys before the one function: catalogs keep their patients
    assert patient_identity(P, "f", {}, {"PatientName": "Doe^Jane", "PatientBirthDate": "19600102"})[0] == \
        P.patient("Doe^Jane|19600102")
    assert patient_identity(P, "f", {}, {"PatientName": "Doe^Jane"})[0] == P.patient("Doe^Jane|")
    assert patient_identity(P, "f", {}, {"StudyInstanceUID": "1.2.3"})[0] == P.key("patient-of-study", "1.2.3")
    assert patient_identity(P, "f" * 16, {})[0] == P.key("patient-of-file", "f" * 16)


def test_an_exam_is_never_taken_for_a_patient_id():
    # exam "123" and PatientID "123" of another source are different people
    assert patient_identity(P, "f", {"exam": "123"})[0] != patient_identity(P, "f", {}, {"PatientID": "123"})[0]
    assert patient_identity(P, "f", {"exam": "123"})[0] == patient_identity(P, "g", {"exam": "123"})[0]
