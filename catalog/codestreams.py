"""The size a codestream declares, read from its own header without decoding: PNG IHDR, JPEG SOF (baseline,
extended, progressive, lossless and JPEG-LS), JPEG 2000 SIZ (a raw codestream, or the `jp2c` box of a JP2 file,
checked against its `ihdr` box).

A decoder allocates what the codestream says, whatever a container's header claims: a 400-byte JPEG 2000 stream
declaring 60000 x 60000 inside a DICOM whose Rows/Columns say 512 makes openjpeg reserve gigabytes. So the size is
read here first and compared with the container and the pixel budget (catalog/pixel_budget.py).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
J2K_SIGNATURE = b"\xff\x4f\xff\x51"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
# SOF0-3, 5-7, 9-11, 13-15 and JPEG-LS's SOF55; C4 (DHT), C8 (JPG) and CC (DAC) share the range but are not frames
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7}
_STANDALONE = {0x01, 0xD8, *range(0xD0, 0xD8)}
_SCAN_LIMIT = 1 << 20  # a header further in than this is not one a decoder would find first either


class CodestreamError(ValueError):
    """A codestream whose header cannot be read (cut short or malformed)."""


@dataclass(frozen=True)
class DeclaredSize:
    codec: str  # png | jpeg | j2k
    rows: int
    cols: int
    bits: int  # per sample
    samples: int  # per pixel

    @property
    def decoded_bytes(self) -> int:
        return self.rows * self.cols * self.samples * ((max(self.bits, 8) + 7) // 8)


def codec_of(data: bytes) -> str | None:
    if data.startswith(PNG_SIGNATURE):
        return "png"
    if data.startswith(b"\xff\xd8"):
        return "jpeg"
    if data.startswith(J2K_SIGNATURE):
        return "j2k"
    if data.startswith(JP2_SIGNATURE):
        return "jp2"
    return None


def declared_size(data: bytes) -> DeclaredSize | None:
    """The size the codestream declares; None for a codestream of no codec known here (RLE, a native array: their
    size is the container's). Raises CodestreamError for a known codec whose header cannot be read."""
    codec = codec_of(data)
    try:
        if codec == "png":
            return png_size(data)
        if codec == "jpeg":
            return jpeg_size(data)
        if codec == "j2k":
            return j2k_size(data)
        if codec == "jp2":
            return jp2_size(data)
    except struct.error:
        raise CodestreamError(f"{codec} header ends early") from None
    return None


def png_size(data: bytes) -> DeclaredSize:
    length, kind = struct.unpack(">I4s", data[8:16])
    if kind != b"IHDR" or length < 13:
        raise CodestreamError("png without IHDR first")
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    if colour not in _PNG_CHANNELS:
        raise CodestreamError("png colour type unknown")
    return DeclaredSize("png", height, width, depth, _PNG_CHANNELS[colour])


def jpeg_size(data: bytes) -> DeclaredSize:
    pos, end = 2, min(len(data), _SCAN_LIMIT)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            raise CodestreamError("jpeg marker expected")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        if marker in _SOF:
            bits, rows, cols, samples = struct.unpack(">BHHB", data[pos + 4:pos + 10])
            return DeclaredSize("jpeg", rows, cols, bits, samples)
        if marker in (0xDA, 0xD9) or length < 2:
            break  # a scan or the end before any frame header
        pos += 2 + length
    raise CodestreamError("jpeg without a frame header")


def j2k_size(data: bytes, at: int = 0) -> DeclaredSize:
    if data[at:at + 4] != J2K_SIGNATURE:
        raise CodestreamError("j2k codestream without SIZ first")
    xsiz, ysiz, xosiz, yosiz = struct.unpack(">IIII", data[at + 8:at + 24])
    (components,) = struct.unpack(">H", data[at + 40:at + 42])
    if components < 1 or xsiz <= xosiz or ysiz <= yosiz:
        raise CodestreamError("j2k SIZ declares no image")
    bits = max((data[at + 42 + 3 * c] & 0x7F) + 1 for c in range(components))
    return DeclaredSize("j2k", ysiz - yosiz, xsiz - xosiz, bits, components)


def jp2_size(data: bytes) -> DeclaredSize:
    """SIZ of the contiguous codestream box; a `ihdr` that says otherwise is a lie about the same image."""
    header, stream = None, None
    for kind, start, end in _boxes(data, 0, len(data)):
        if kind == b"jp2h":
            header = next(((s, e) for k, s, e in _boxes(data, start, end) if k == b"ihdr"), None)
        elif kind == b"jp2c":
            stream = j2k_size(data, start)
            break
    if stream is None:
        raise CodestreamError("jp2 without a codestream box")
    if header is not None:
        rows, cols = struct.unpack(">II", data[header[0]:header[0] + 8])
        if (rows, cols) != (stream.rows, stream.cols):
            raise CodestreamError("jp2 ihdr and codestream disagree")
    return stream


def _boxes(data: bytes, pos: int, end: int):
    """(type, payload start, payload end) of the boxes in data[pos:end]."""
    while pos + 8 <= end:
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        head = 8
        if length == 1:
            (length,), head = struct.unpack(">Q", data[pos + 8:pos + 16]), 16
        elif length == 0:
            length = end - pos
        if length < head:
            raise CodestreamError("jp2 box length invalid")
        yield kind, pos + head, min(pos + length, end)
        pos += length
