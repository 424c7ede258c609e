import datetime as dt

from catalog.deid import MAX_AGE_DAYS, Pseudonymizer, age_days, capped_age_string, declares_burned_in, parse_da


def test_pseudonyms_are_keyed_stable_and_secret_dependent():
    a, b = Pseudonymizer(b"a" * 32), Pseudonymizer(b"b" * 32)
    assert a.patient("PHX7731ZQ") == a.patient("PHX7731ZQ") == a.patient(" PHX7731ZQ ")
    assert a.patient("PHX7731ZQ") != b.patient("PHX7731ZQ")
    assert a.patient("1") != a.study("1") != a.series("1")
    assert "PHX" not in a.patient("PHX7731ZQ")


def test_date_shift_is_per_patient_never_zero_and_within_a_year():
    p = Pseudonymizer(b"k" * 32)
    shifts = {p.date_shift_days(p.patient(str(i))) for i in range(500)}
    assert 0 not in shifts
    assert min(shifts) >= -365 and max(shifts) <= 365
    assert len(shifts) > 100
    key = p.patient("x")
    d = p.shifted_date("20210914", key)
    assert d != dt.date(2021, 9, 14) and p.shifted_date("20220101", key) - d == dt.date(2022, 1, 1) - dt.date(2021, 9, 14)


def test_age_in_days_is_capped_at_90_years():
    assert age_days("20200101", "19700101") == (dt.date(2020, 1, 1) - dt.date(1970, 1, 1)).days
    assert age_days("20200101", "19000101") == MAX_AGE_DAYS
    assert age_days(None, None, "095Y") == MAX_AGE_DAYS
    assert age_days(None, None, "006M") == int(6 * 30.4375)
    assert age_days("garbage", None, "x") is None


def test_parse_da_refuses_nonsense():
    assert parse_da("20211301") is None and parse_da("abc") is None and parse_da("2021.09.14") == dt.date(2021, 9, 14)


def test_an_exported_age_is_whole_years_capped_at_90_and_read_as_the_readers_read_it():
    assert capped_age_string("045Y") == "045Y" and capped_age_string("097Y") == "090Y"
    assert capped_age_string("018M") == "001Y" and capped_age_string("200D") == "000Y"
    # the readers' reading of an AS value (padding, case, fewer digits): an old export let these pass uncapped
    assert capped_age_string(" 95y ") == "090Y" and age_days(None, None, " 95y ") == MAX_AGE_DAYS
    assert capped_age_string("ninety") is None and capped_age_string(None) is None


def test_uids_map_to_valid_consistent_secret_dependent_uids():
    a, b = Pseudonymizer(b"a" * 32), Pseudonymizer(b"b" * 32)
    uid = "1.2.840.113619.2.55.3.604688119.969.1268071029.320"
    assert a.uid(uid) == a.uid(uid) != b.uid(uid) and a.uid(uid) != a.uid(uid + "1")
    assert a.uid(uid).startswith("2.25.") and len(a.uid(uid)) <= 64 and a.uid(uid)[5:].isdigit()


def test_only_yes_declares_burned_in_text():
    assert declares_burned_in("YES") and declares_burned_in(" yes ")
    assert not any(declares_burned_in(v) for v in ("NO", "", None, "Y"))
