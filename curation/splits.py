"""Patient-level splits: deterministic, stable as patients arrive, honouring declared splits.

A patient's split is decided once and recorded (catalog/splits/*.parquet, first record wins):
  - a split the source declares for any of the patient's images (e.g. knee-xray-kl's train/val
    folders) is honoured; a patient declared in several goes to the most held-out one
    (test > val > train), so that no patient is ever in two splits;
  - otherwise a hash of the patient key, with the policy's seed, places it by the ratios.
Adding patients never moves an existing one; changing ratios affects only new patients.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from catalog.errors import SettingRefused

SPLITS = ("train", "val", "test")
_HELD_OUT_ORDER = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class SplitPolicy:
    ratios: dict = field(default_factory=lambda: {"train": 0.8, "val": 0.1, "test": 0.1})
    seed: str = "v1"

    def __post_init__(self):
        if set(self.ratios) - set(SPLITS) or abs(sum(self.ratios.values()) - 1.0) > 1e-6:
            raise SettingRefused("split ratios must be over train/val/test and sum to 1")


def hashed_split(patient_key: str, policy: SplitPolicy) -> str:
    u = int(hashlib.sha256(f"{policy.seed}:{patient_key}".encode()).hexdigest()[:15], 16) / float(1 << 60)
    acc = 0.0
    for name in SPLITS:
        acc += policy.ratios.get(name, 0.0)
        if u < acc:
            return name
    return "train"


def assign(patient_key: str, declared: set[str], policy: SplitPolicy) -> tuple[str, str]:
    """(split, basis) for a patient seen for the first time."""
    declared = {d for d in declared if d in _HELD_OUT_ORDER}
    if declared:
        return max(declared, key=_HELD_OUT_ORDER.get), "declared"
    return hashed_split(patient_key, policy), "hashed"
