"""Age at the study, capped (HIPAA safe harbour). Pseudonyms and date shifts live in catalog/deid.py."""

from __future__ import annotations

import re

from catalog.deid import parse_da

MAX_AGE_DAYS = int(90 * 365.25)  # ages over 89 are reported as 90


def age_days(study_date: object, birth_date: object, age_string: object = None) -> int | None:
    """Age at the study in days, capped at 90 years; from dates, or from an AS value like '045Y'."""
    s, b = parse_da(study_date), parse_da(birth_date)
    days = None
    if s and b and s >= b:
        days = (s - b).days
    else:
        m = re.match(r"^(\d{1,3})([DWMY])$", str(age_string or "").strip().upper())
        if m:
            days = int(int(m[1]) * {"D": 1, "W": 7, "M": 30.4375, "Y": 365.25}[m[2]])
    return min(days, MAX_AGE_DAYS) if days is not None else None
