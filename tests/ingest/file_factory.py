"""NIfTI and PNG files built in code for reader tests."""

import gzip
import io

import nibabel as nib
import numpy as np
from PIL import Image


def nifti_bytes(arr, affine=None, gz=True) -> bytes:
    raw = nib.Nifti1Image(arr, np.eye(4) if affine is None else affine).to_bytes()
    return gzip.compress(raw) if gz else raw


def png(arr) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()
