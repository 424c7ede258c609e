"""Knee MRI volumes: a sagittal proton-density knee drawn with or without an ACL tear, and its NIfTI file."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np

from flows.phantom.drawing import soft

# array (rows, cols, slices) -> (anterior-posterior, superior-inferior, left-right): sagittal slices
NIFTI_AFFINE = np.array([[0, 0, 3.0, -20], [-0.6, 0, 0, 30], [0, -0.6, 0, 30], [0, 0, 0, 1]])


def draw_mri(acl_tear: bool, rng: np.random.Generator, shape=(96, 96, 12)) -> np.ndarray:
    """A sagittal proton-density knee volume (rows, cols, slices), 12-bit in uint16."""
    h, w, n = shape
    z, y, x = np.mgrid[0:n, 0:h, 0:w].astype(np.float32)
    cy, cx = h * 0.5 + rng.normal(0, 2), w * 0.5 + rng.normal(0, 2)
    vol = 300 + 0 * x
    femur = np.hypot((x - cx) / 1.2, y - (cy - h * 0.22)) - h * 0.2
    tibia = np.maximum(-(y - (cy + h * 0.06)), np.abs(x - cx) - w * 0.28)
    width = 1 - np.abs(z - n / 2) / (n * 0.7)
    vol += 900 * soft(femur) * width + 900 * soft(tibia) * width
    vol += 1500 * soft(np.abs(femur - 2) - 1.5) * width  # cartilage: bright rim
    for sx in (-1, 1):  # menisci: dark wedges
        vol -= 250 * soft(np.hypot(x - (cx + sx * w * 0.2), y - (cy + h * 0.03)) - 3)
    t = (x - cx) / (w * 0.25)
    acl = soft(np.abs(y - (cy + h * 0.03 - t * h * 0.15)) - 1.5) * (np.abs(t) < 1) * (np.abs(z - n / 2) < 2)
    if acl_tear:
        acl *= np.abs(t) > 0.3
    vol += 1200 * acl
    vol += rng.normal(0, 30, vol.shape)
    return np.clip(vol, 0, 4095).astype(np.uint16).transpose(1, 2, 0)


def nifti_gz(vol: np.ndarray, affine: np.ndarray = NIFTI_AFFINE) -> bytes:
    """A .nii.gz of the volume (gzip without a timestamp, so the bytes are reproducible), with free text
    in the header that a reader must not copy."""
    img = nib.Nifti1Image(vol, affine)
    img.header["descrip"] = b"Zorblatt knee"  # free text a reader must not copy
    return gzip.compress(img.to_bytes(), mtime=0)
