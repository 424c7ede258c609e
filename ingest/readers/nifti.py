"""NIfTI reader (.nii, .nii.gz; NIfTI-1 and -2): volumes cut into 2D slices.

Slice axis (per source, `--slice-axis`):
  auto  the acquisition plane: the axis with the thickest voxels; on ties the axis with the fewest
        voxels; on ties the last axis. MRI is acquired as a stack of 2D slices and those slices
        are the images a radiologist reads; reslicing a 5 mm stack along its in-plane axes gives
        smeared images that teach a model little. (default)
  0|1|2 that array axis, for every file of the source.
  all   all three planes (3x the images; for isotropic 3D acquisitions).
With real geometry (an affine that is not the nominal identity) the volume is first brought to
the closest RAS orientation, so slices come out with the same handedness whatever the scanner
wrote; with a nominal identity affine the array is sliced as stored. 4D data: each volume along
the fourth axis is sliced (volume_index). The header's free-text fields (descrip, aux_file,
intent_name, extensions) are never read.
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import Iterator

import nibabel as nib
import numpy as np

from catalog.deid import patient_identity, study_key
from ingest.pixels import Frame, to_storable
from ingest.reasons import Quarantine
from ingest.readers.context import ReadContext

_PLANE_OF_RAS_AXIS = ("sagittal", "coronal", "axial")


def _inflate(d, data: bytes, size: int) -> bytes:
    """At most `size` more bytes of a gzip stream: a bomb inflates no further than the header's declared size."""
    try:
        return d.decompress(data, size) if size > 0 else b""
    except zlib.error:
        raise Quarantine("truncated", "gzip stream is corrupt or ends early") from None


def _load(data: bytes, ctx: ReadContext):
    if data[:2] == b"\x1f\x8b":
        # the header first, then exactly the pixels it declares (already checked against the budget): never the
        # whole stream, whatever it inflates to
        d = zlib.decompressobj(wbits=47)
        head = _inflate(d, data, 540)
        cls, offset, need = _declared(head, ctx)
        data = head + _inflate(d, d.unconsumed_tail, offset + need - len(head))
    else:
        cls, offset, need = _declared(data, ctx)
    if len(data) < offset + need:
        raise Quarantine("truncated", f"data is {max(len(data) - offset, 0)} bytes, header declares {need}")
    try:
        return cls.from_bytes(data)
    except Exception as e:
        raise Quarantine("invalid_nifti", f"image load failed ({type(e).__name__})") from None


def _declared(data: bytes, ctx: ReadContext):
    """(image class, data offset, pixel bytes) from the header, the size checked against the budget."""
    if len(data) < 348:
        raise Quarantine("truncated", f"{len(data)} bytes is shorter than a NIfTI header")
    size_le, size_be = struct.unpack("<i", data[:4])[0], struct.unpack(">i", data[:4])[0]
    if 348 in (size_le, size_be):
        magic, cls = data[344:348], nib.Nifti1Image
        if magic == b"ni1\x00":
            raise Quarantine("unsupported_format", "NIfTI header/image pair (.hdr/.img)")
    elif 540 in (size_le, size_be):
        magic, cls = data[4:8], nib.Nifti2Image
    else:
        raise Quarantine("invalid_nifti", "header size is neither 348 nor 540")
    if magic[:3] not in (b"n+1", b"n+2"):
        raise Quarantine("invalid_nifti", "missing NIfTI magic")
    try:
        header = cls.header_class.from_fileobj(io.BytesIO(data), check=False)
        shape = header.get_data_shape()
        dtype = header.get_data_dtype()
    except Exception as e:
        raise Quarantine("invalid_nifti", f"header parse failed ({type(e).__name__})") from None
    if not shape or any(int(n) <= 0 for n in shape):
        raise Quarantine("absurd_dimensions", f"declared shape {tuple(int(n) for n in shape)}")
    need = int(np.prod([int(n) for n in shape], dtype=np.float64)) * dtype.itemsize
    if need > ctx.limits.max_decoded_bytes:
        raise Quarantine("absurd_dimensions", f"declared shape {tuple(int(n) for n in shape)} needs {need} bytes")
    return cls, int(header.get_data_offset()), need


def _is_nominal(affine: np.ndarray) -> bool:
    return bool(np.allclose(affine, np.eye(4)))


def _slice_axes(zooms: tuple[float, ...], shape: tuple[int, ...], choice: str) -> list[int]:
    if choice == "all":
        return [0, 1, 2]
    if choice in ("0", "1", "2"):
        return [int(choice)]
    return [max(range(3), key=lambda a: (round(zooms[a], 3), -shape[a], a))]


def read_nifti(data: bytes, ctx: ReadContext) -> Iterator[Frame]:
    img, nominal = _oriented(_load(data, ctx))
    header = img.header
    arr = _voxels(img)
    slope, inter = _slope_inter(header)
    arr = _as_4d(arr)
    zooms = tuple(float(z) for z in header.get_zooms()[:3]) + (1.0,) * (3 - len(header.get_zooms()[:3]))
    orientation = "nominal" if nominal else "".join(nib.aff2axcodes(img.affine))
    base = _base_attrs(ctx, orientation, arr.dtype)
    eight_bit = arr.dtype.itemsize == 1
    frame_index = 0
    for volume in range(arr.shape[3]):
        for axis in _slice_axes(zooms, arr.shape[:3], ctx.slice_axis):
            series_key = ctx.pseudo.key("series-of-file", f"{ctx.file_id}:{axis}")
            for k, sl, (rows_axis, cols_axis) in _slices(arr[..., volume], axis, nominal):
                storable = to_storable(np.ascontiguousarray(sl), slope, inter, eight_bit_source=eight_bit)
                attrs = dict(base)
                attrs.update(
                    frame_index=frame_index,
                    volume_index=volume if arr.shape[3] > 1 else None,
                    series_key=series_key,
                    plane=None if nominal else _PLANE_OF_RAS_AXIS[axis],
                    slice_position=k * zooms[axis],
                    pixel_spacing_row=zooms[rows_axis],
                    pixel_spacing_col=zooms[cols_axis],
                    slice_thickness=zooms[axis],
                    intensity_scale=storable.scale,
                    intensity_offset=storable.offset,
                )
                frame_index += 1
                yield Frame(storable.pixels, attrs)


def _oriented(img) -> tuple:
    """(the image in the closest RAS orientation, False), or (the image as stored, True) when its
    affine is the nominal identity or cannot be reoriented."""
    nominal = _is_nominal(img.affine)
    if not nominal:
        try:
            img = nib.as_closest_canonical(img)
        except Exception:
            nominal = True  # a degenerate affine: slice as stored
    return img, nominal


def _voxels(img) -> np.ndarray:
    """The stored (unscaled) voxel values; real numbers only."""
    try:
        arr = np.asanyarray(img.dataobj.get_unscaled()) if hasattr(img.dataobj, "get_unscaled") else np.asanyarray(img.dataobj)
    except Exception as e:
        raise Quarantine("truncated", f"voxel data unreadable ({type(e).__name__})") from None
    if np.iscomplexobj(arr) or arr.dtype.names:
        raise Quarantine("unsupported_pixel_format", f"voxel type {arr.dtype}")
    return arr


def _slope_inter(header) -> tuple[float, float]:
    """The header's intensity scaling; identity for a missing, non-finite or zero slope."""
    slope, inter = header.get_slope_inter()
    slope = 1.0 if slope is None or not np.isfinite(slope) or slope == 0 else float(slope)
    inter = 0.0 if inter is None or not np.isfinite(inter) else float(inter)
    return slope, inter


def _as_4d(arr: np.ndarray) -> np.ndarray:
    """(x, y, z, volume): 2D and 3D data gain unit axes, trailing unit axes past the fourth are dropped."""
    while arr.ndim > 4 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim > 4:
        raise Quarantine("unsupported_pixel_format", f"{arr.ndim}D data")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim == 3:
        arr = arr[..., None]
    return arr


def _base_attrs(ctx: ReadContext, orientation: str, dtype: np.dtype) -> dict:
    """The attributes every slice of the file shares."""
    pseudo, hints = ctx.pseudo, ctx.hints
    patient_key, basis = patient_identity(pseudo, ctx.file_id, hints)
    return {
        "format": "nifti",
        "modality": ctx.defaults.get("modality") or "MR",
        "body_part": ctx.defaults.get("body_part") or "unknown",
        "patient_key": patient_key,
        "patient_key_basis": basis,
        "study_key": study_key(pseudo, hints) or pseudo.key("study-of-file", ctx.file_id),
        "orientation": orientation,
        "bits_stored": 8 * dtype.itemsize,
        "photometric": "MONOCHROME2",
    }


def _slices(vol: np.ndarray, axis: int, nominal: bool) -> Iterator[tuple[int, np.ndarray, tuple[int, int]]]:
    """(k, the k-th slice of a 3D volume along `axis`, the volume axes of its rows and columns): as
    stored when `nominal`, else from RAS to display orientation."""
    in_plane = [a for a in range(3) if a != axis]
    for k in range(vol.shape[axis]):
        sl = np.take(vol, k, axis=axis)
        if not nominal:
            yield k, sl.T[::-1], (in_plane[1], in_plane[0])  # RAS -> display: superior/anterior at the top
        else:
            yield k, sl, (in_plane[0], in_plane[1])
