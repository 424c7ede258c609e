"""A test or selection part too small to measure anything marks the results as a smoke run."""

from evaluation.evaluator import SMOKE_PATIENTS, smoke_notes


def _part(patients: int, classes: list[int]) -> dict:
    return {"images": sum(classes), "patients": patients, "classes": classes}


def test_small_or_single_class_parts_are_a_smoke_run():
    big = _part(SMOKE_PATIENTS + 20, [30, 20, 10])
    assert smoke_notes({"fit": big, "select": big, "test": big}) == []
    notes = smoke_notes({"fit": big, "select": _part(40, [40, 0, 0]), "test": _part(7, [8, 6, 0])})
    assert len(notes) == 2
    assert "test part holds 7 patients (14 images)" in notes[0] and notes[0].startswith("smoke run")
    assert "selection part holds a single class" in notes[1]
    assert smoke_notes({"fit": big, "select": _part(0, [0, 0, 0]), "test": big}) == []  # no selection part: CV
