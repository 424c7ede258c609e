"""What a reader needs besides the bytes: pseudonymiser, path hints, source defaults, limits."""

from __future__ import annotations

from dataclasses import dataclass, field

from catalog.pixel_budget import Limits  # noqa: F401  (the one budget: catalog/pixel_budget.py)
from catalog.deid import Pseudonymizer


@dataclass
class ReadContext:
    pseudo: Pseudonymizer
    file_id: str
    hints: dict = field(default_factory=dict)  # named groups of the source's path pattern
    defaults: dict = field(default_factory=dict)  # the source's declared modality / body part
    limits: Limits = field(default_factory=Limits)
    slice_axis: str = "auto"  # NIfTI: auto (acquisition plane) | 0 | 1 | 2 | all
