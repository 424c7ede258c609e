"""Stable reason codes for quarantined files. Codes are part of the catalog's contract."""

from __future__ import annotations

from catalog.errors import BrokenInvariant

REASONS = {
    "empty_file": "the file has zero bytes",
    "permission_denied": "the file or folder could not be opened (permissions)",
    "read_error": "an I/O error while reading the file",
    "broken_symlink": "a symbolic link whose target does not exist",
    "symlink_loop": "a symbolic link that leads back into a folder already being scanned",
    "unreadable_directory": "a folder that could not be listed; its files are unknown",
    "too_large": "the file, or its decompressed content, is larger than the configured limit",
    "unrecognized_format": "the content matches no supported format (DICOM, NIfTI, PNG, JPEG, TIFF, BMP)",
    "extension_mismatch": "the extension names one format and the content is another",
    "invalid_dicom": "a DICOM header that cannot be parsed",
    "invalid_nifti": "a NIfTI header that cannot be parsed or is inconsistent",
    "unsupported_format": "a recognised format this platform does not ingest (e.g. Analyze pairs)",
    "truncated": "the file ends before the data its header declares",
    "non_image_object": "a DICOM object without pixels (structured report, presentation state, ...)",
    "no_pixel_data": "a DICOM image object that carries no pixel data",
    "unsupported_transfer_syntax": "no installed decoder handles the DICOM transfer syntax",
    "unsupported_pixel_format": "pixel layout that cannot be represented as a 2D grayscale image",
    "decode_error": "the pixel data failed to decode",
    "absurd_dimensions": "declared image dimensions are zero or beyond the configured limit",
    "declared_size_mismatch": "a codestream declares another image size than the file's header (refused before decoding)",
    "not_regular_file": "a named pipe, device, socket (or a link to one) in the source: listed, never opened",
    "burned_in_annotation": "DICOM declares burned-in annotation: pixels may show identifying text",
    "burned_in_text": "text was found in the pixels and the source's policy is --burned-in quarantine",
    "pacs_retrieve_failed": "the PACS would not give the instance after retries; its study is pulled again next run",
    "pacs_bad_response": "the PACS answered with something that is not a DICOM instance or a valid query answer",
    "pacs_incomplete_listing": "the PACS listed fewer instances of a series than it reports, after retries",
    "internal_error": "an unexpected error; the message names only the exception type",
}


class Quarantine(Exception):
    """Raised by a reader: the file is set aside with a stable reason and a non-identifying detail."""

    def __init__(self, reason: str, detail: str = ""):
        if reason not in REASONS:
            raise BrokenInvariant(f"unknown quarantine reason {reason!r}")
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail

    @classmethod
    def refused(cls, e) -> "Quarantine":
        """The quarantine for pixels the budget refused (catalog/pixel_budget.py: the reasons are shared)."""
        return cls(e.reason, e.detail)
