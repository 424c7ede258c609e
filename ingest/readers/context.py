"""What a reader needs besides the bytes: pseudonymiser, path hints, source defaults, limits."""

from __future__ import annotations

from dataclasses import dataclass, field

from catalog.pseudonyms import Pseudonymizer


@dataclass(frozen=True)
class Limits:
    """Per-file read limits; `ortho` takes them from ORTHO_MAX_FILE_BYTES, ORTHO_MAX_DECODED_BYTES, ORTHO_MAX_PIXELS
    (flows/settings.py) and an ingest run carries them to its batches in the batch spec."""

    max_file_bytes: int = 4 << 30
    max_decoded_bytes: int = 2 << 30  # one file's decoded pixels; also caps gzip expansion
    max_pixels_per_image: int = 1 << 28  # 16384 x 16384


@dataclass
class ReadContext:
    pseudo: Pseudonymizer
    file_id: str
    hints: dict = field(default_factory=dict)  # named groups of the source's path pattern
    defaults: dict = field(default_factory=dict)  # the source's declared modality / body part
    limits: Limits = field(default_factory=Limits)
    slice_axis: str = "auto"  # NIfTI: auto (acquisition plane) | 0 | 1 | 2 | all
