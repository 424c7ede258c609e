"""The phantom's patients: invented, deliberately unusual names, IDs, birth and study dates."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

_FAMILY = ["Zorblatt", "Quimbleton", "Vexhallow", "Marplewick", "Draxford", "Ollivant", "Pemberthy", "Sculdrane"]
_GIVEN = ["Quentin", "Ermintrude", "Bartholomew", "Hyacinth", "Thaddeus", "Philippa", "Leopold", "Griselda"]
MAX_PATIENTS = 512  # distinct (family, given initial) pairs; see patients()
DEFAULT_PATIENTS = 6  # a tree drawn without a size (`ortho phantom`, a first draw)


@dataclass(frozen=True)
class PhantomPatient:
    index: int
    family: str
    given: str
    patient_id: str
    birth_date: str
    study_date: str
    accession: str

    @property
    def dicom_name(self) -> str:
        return f"{self.family}^{self.given}"

    @property
    def folder(self) -> str:
        return f"{self.family.upper()}_{self.given.upper()}_{self.birth_date}"


def patients(n: int = DEFAULT_PATIENTS, seed: int = 0) -> list[PhantomPatient]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        birth = dt.date(1940, 1, 1) + dt.timedelta(days=int(rng.integers(0, 20000)))
        study = dt.date(2019, 1, 1) + dt.timedelta(days=int(rng.integers(0, 1400)))
        # distinct (family, given initial) pairs, so file names and label keys never collide: 64 pairs,
        # then double-barrelled family names (up to 512 patients)
        family = _FAMILY[i % 8] + (f"-{_FAMILY[(i // 64) % 8]}" if i >= 64 else "")
        out.append(PhantomPatient(i, family, _GIVEN[(i + i // 8) % 8], f"PHX{7731 + 97 * i}ZQ",
                                  birth.strftime("%Y%m%d"), study.strftime("%Y%m%d"), f"ACC{99812734 + 13 * i}"))
    return out
