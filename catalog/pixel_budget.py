"""One pixel budget for every place that opens pixels (ingest's readers, and curation, shards, export, reports and
evaluation reopening the store), enforced before any decoder allocates.

The declared size is read from the codestream itself (catalog/codestreams.py) and compared with what the container
or the catalog says and with the budget: a size over the budget is refused (`absurd_dimensions`), a codestream that
declares another size than its container (`declared_size_mismatch`). Pillow's own limit (a warning, then an error
at twice 89 million pixels) is never relied on: our check runs first, and Pillow's is switched off in
catalog/pixels.py so that an image within our budget is never refused by a default.

The limits are process-wide: `ortho` sets them from ORTHO_MAX_PIXELS / ORTHO_MAX_DECODED_BYTES /
ORTHO_MAX_FILE_BYTES (flows/settings.py) through `configure`.
"""

from __future__ import annotations

from dataclasses import dataclass

from catalog.codestreams import CodestreamError, DeclaredSize, declared_size


@dataclass(frozen=True)
class Limits:
    """Per-file read limits; an ingest run carries them to its batches in the batch spec."""

    max_file_bytes: int = 4 << 30
    max_decoded_bytes: int = 2 << 30  # one file's decoded pixels; also caps gzip expansion
    max_pixels_per_image: int = 1 << 28  # 16384 x 16384


_current = Limits()


def configure(limits: Limits | None) -> None:
    """The process's limits (None: the defaults)."""
    global _current
    _current = limits or Limits()


def current() -> Limits:
    return _current


# reason codes shared with ingest's quarantine reasons (ingest/reasons.py) and the stages' exclusions
REFUSALS = {
    "absurd_dimensions": "declared image dimensions are zero or beyond the configured pixel budget",
    "declared_size_mismatch": "the codestream declares another size than its header or the catalog",
    "decode_error": "the pixel data failed to decode",
    "truncated": "the object ends before the data its header declares",
    "missing_object": "the stored object is missing",
}


class PixelsRefused(ValueError):
    """Pixels that are not decoded: a stable reason (REFUSALS) and a detail made of numbers only."""

    def __init__(self, reason: str, detail: str = ""):
        assert reason in REFUSALS, reason
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


def check_dimensions(rows: int, cols: int, frames: int = 1, bytes_per_pixel: int = 2,
                     limits: Limits | None = None) -> None:
    """Refuses a declared size over the budget, before anything is allocated for it."""
    limits = limits or _current
    if rows <= 0 or cols <= 0 or frames < 0:
        raise PixelsRefused("absurd_dimensions", f"declared {rows}x{cols}x{frames}")
    if rows * cols > limits.max_pixels_per_image:
        raise PixelsRefused("absurd_dimensions",
                            f"declared {rows}x{cols} exceeds {limits.max_pixels_per_image} pixels")
    need = rows * cols * max(frames, 1) * bytes_per_pixel
    if need > limits.max_decoded_bytes:
        raise PixelsRefused("absurd_dimensions", f"declared {rows}x{cols}x{frames} needs {need} bytes decoded")


def check_codestream(data: bytes, rows: int | None = None, cols: int | None = None,
                     limits: Limits | None = None) -> DeclaredSize | None:
    """The codestream's declared size, checked against the container's `rows` x `cols` (when given) and the budget.
    None for a codestream whose size is its container's (RLE, native)."""
    try:
        declared = declared_size(data)
    except CodestreamError:
        raise PixelsRefused("decode_error", "codestream header unreadable") from None
    if declared is None:
        return None
    if rows is not None and cols is not None and (declared.rows, declared.cols) != (rows, cols):
        raise PixelsRefused("declared_size_mismatch",
                            f"codestream {declared.rows}x{declared.cols}, header {rows}x{cols}")
    check_dimensions(declared.rows, declared.cols, 1, declared.decoded_bytes // max(declared.rows * declared.cols, 1)
                     or 1, limits)
    return declared
