"""The broken files of the pacs export, which ingest must quarantine rather than crash on: a truncated
DICOM, an empty one, random bytes, a text file, a PNG named .dcm and a NIfTI with a zeroed header."""

from __future__ import annotations

import nibabel as nib
import numpy as np

from flows.phantom.public import png_bytes


def broken_files(good_dicom: bytes, rng: np.random.Generator) -> dict[str, bytes]:
    """File name -> bytes, for pacs/broken/. `good_dicom` is cut in half; rng draws the random bytes."""
    nii = nib.Nifti1Image(np.zeros((8, 8, 4), np.int16), np.eye(4)).to_bytes()
    return {
        "truncated.dcm": good_dicom[: len(good_dicom) // 2],
        "empty.dcm": b"",
        "random.dcm": rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "notes.txt": b"exported by the PACS\n",
        "actually_png.dcm": png_bytes(np.zeros((8, 8), np.uint8)),
        "corrupt.nii": b"\x00" * 40 + nii[40:],
    }
