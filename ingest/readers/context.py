"""What a reader needs besides the bytes: pseudonymiser, path hints, source defaults, limits."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from catalog.pseudonyms import Pseudonymizer


@dataclass(frozen=True)
class Limits:
    max_file_bytes: int = 4 << 30
    max_decoded_bytes: int = 2 << 30  # one file's decoded pixels; also caps gzip expansion
    max_pixels_per_image: int = 1 << 28  # 16384 x 16384

    @classmethod
    def from_env(cls) -> "Limits":
        """ORTHO_MAX_FILE_BYTES, ORTHO_MAX_DECODED_BYTES, ORTHO_MAX_PIXELS override the defaults."""
        base = cls()
        return cls(
            max_file_bytes=int(os.environ.get("ORTHO_MAX_FILE_BYTES", base.max_file_bytes)),
            max_decoded_bytes=int(os.environ.get("ORTHO_MAX_DECODED_BYTES", base.max_decoded_bytes)),
            max_pixels_per_image=int(os.environ.get("ORTHO_MAX_PIXELS", base.max_pixels_per_image)),
        )


@dataclass
class ReadContext:
    pseudo: Pseudonymizer
    file_id: str
    hints: dict = field(default_factory=dict)  # named groups of the source's path pattern
    defaults: dict = field(default_factory=dict)  # the source's declared modality / body part
    limits: Limits = field(default_factory=Limits)
    slice_axis: str = "auto"  # NIfTI: auto (acquisition plane) | 0 | 1 | 2 | all
