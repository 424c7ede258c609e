"""Studies and instances as the archive names them; an instance's entry in the listing is STUDY/SERIES/SOP."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Study:
    uid: str
    instances: int  # NumberOfStudyRelatedInstances (0: the archive did not say)
    description: str = ""


@dataclass(frozen=True)
class Instance:
    study: str
    series: str
    sop: str

    @property
    def relpath(self) -> str:
        return f"{self.study}/{self.series}/{self.sop}"

    @classmethod
    def from_relpath(cls, relpath: str) -> "Instance":
        study, series, sop = relpath.split("/")
        return cls(study, series, sop)


def tag_value(item: dict, tag: str) -> str | None:
    """The first value of a tag in DICOM JSON (PS3.18 F.2)."""
    values = (item.get(tag) or {}).get("Value") or []
    if not values:
        return None
    value = values[0]
    if isinstance(value, dict):  # a person name
        value = value.get("Alphabetic")
    return None if value is None else str(value)
