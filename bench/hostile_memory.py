"""Peak memory of one file's read, hostile against clean: no file may raise peak RSS above the clean file's of the
same declared type by more than the decode budget.

    python bench/hostile_memory.py                 # budget ORTHO_MAX_DECODED_BYTES = 256 MiB
    python bench/hostile_memory.py --budget-mb 64

Each file is read by the ingest readers (`read_frames`, the frames consumed as ingest does) in a fresh process
that imports what ingest imports; the figure is its peak RSS (ru_maxrss of the whole process, against the clean file's). Hostile files: size bombs in every codec (a JPEG 2000 SIZ, a JPEG SOF, a PNG IHDR declaring
60000 x 60000 inside a 512 x 512 header or on their own), a gzip bomb (a NIfTI that inflates to 1 GiB of zeros),
a DICOM declaring a million frames, and a PNG whose IHDR and header agree on 20000 x 20000 (over the budget, and
honest). Clean files: the same codec at 512 x 512.
"""

from __future__ import annotations

import argparse
import io
import os
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from tests.ingest.dicom_factory import encapsulated_dicom, make_dicom  # noqa: E402
from tests.ingest.file_factory import nifti_bytes  # noqa: E402

_CHILD = """
import resource, sys
from catalog.deid import Pseudonymizer
from ingest.readers import Limits, ReadContext, read_frames
from ingest.reasons import Quarantine
data = open(sys.argv[1], "rb").read()
limits = Limits(max_decoded_bytes=int(sys.argv[3]))
try:
    frames = [f.pixels.shape for f in read_frames(data, sys.argv[2], ReadContext(Pseudonymizer(b"s" * 32), "f" * 16, limits=limits))[1]]
    reason = f"read ({len(frames)} frames)"
except Quarantine as q:
    reason = q.reason
print(reason.replace(" ", "_"), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def _pixels(n: int = 512) -> np.ndarray:
    y, x = np.mgrid[0:n, 0:n]
    return ((x * 3 + y * 5) % 251).astype(np.uint8)


def _encoded(fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_pixels()).save(buf, fmt, **kw)
    return buf.getvalue()


def _in_dicom(stream: bytes, syntax) -> bytes:
    return encapsulated_dicom(stream, syntax, 512, 512)


def _png_declaring(rows: int, cols: int) -> bytes:
    data = bytearray(_encoded("PNG"))
    data[16:24] = struct.pack(">II", cols, rows)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _gzip_bomb(head: bytes, zeros: int) -> bytes:
    z = zlib.compressobj(9, zlib.DEFLATED, 31)  # one gzip member
    chunk = bytes(64 << 20)
    return z.compress(head) + b"".join(z.compress(chunk) for _ in range(zeros // len(chunk))) + z.flush()


def _big_png() -> bytes:
    """A legitimate image of 128 MiB decoded: shows the measurement sees a decode (under a 256 MiB budget)."""
    buf = io.BytesIO()
    Image.fromarray(np.tile(_pixels().astype(np.uint16) * 200, (16, 16))).save(buf, "PNG")
    return buf.getvalue()


def cases() -> dict[str, list[tuple[str, str, bytes]]]:
    """declared type -> [(case, file name, bytes)], the clean file first."""
    j2k = _encoded("JPEG2000", no_jp2=True)
    lying_j2k = j2k[:8] + struct.pack(">II", 60000, 60000) + j2k[16:]
    jpeg = _encoded("JPEG", quality=90)
    sof = jpeg.index(b"\xff\xc0")
    lying_jpeg = jpeg[:sof + 5] + struct.pack(">HH", 60000, 60000) + jpeg[sof + 9:]
    header = nifti_bytes(np.zeros((1024, 1024, 1024), np.uint8)[:1, :1, :1], gz=False)[:352]
    header = header[:42] + struct.pack("<hhhh", 512, 512, 4, 1) + header[50:]
    bomb = _gzip_bomb(header, 1 << 30)  # 1 MiB of pixels declared, 1 GiB inflated, 1 MiB compressed
    return {
        "DICOM JPEG 2000": [("clean 512 x 512", "a.dcm", _in_dicom(j2k, JPEG2000Lossless)),
                            ("SIZ says 60000 x 60000", "b.dcm", _in_dicom(lying_j2k, JPEG2000Lossless))],
        "DICOM JPEG baseline": [("clean 512 x 512", "a.dcm", _in_dicom(jpeg, JPEGBaseline8Bit)),
                                ("SOF says 60000 x 60000", "b.dcm", _in_dicom(lying_jpeg, JPEGBaseline8Bit))],
        "DICOM native": [("clean 512 x 512", "a.dcm", make_dicom(_pixels().astype(np.uint16))),
                         ("1,000,000 frames declared", "b.dcm",
                          make_dicom(_pixels().astype(np.uint16), frames=1_000_000))],
        "PNG": [("clean 512 x 512", "a.png", _encoded("PNG")),
                ("IHDR says 60000 x 60000", "b.png", _png_declaring(60000, 60000)),
                ("IHDR says 20000 x 20000", "c.png", _png_declaring(20000, 20000)),
                ("control: a real 8000 x 8000 16-bit", "d.png", _big_png())],
        "JPEG": [("clean 512 x 512", "a.jpg", jpeg), ("SOF says 60000 x 60000", "b.jpg", lying_jpeg)],
        "NIfTI gz": [("clean 512 x 512 x 4", "a.nii.gz", nifti_bytes(np.zeros((512, 512, 4), np.uint8) + 7)),
                     ("gzip bomb: 1 MiB declared, 1 GiB inflated", "b.nii.gz", bomb)],
    }


def measure(path: Path, name: str, budget: int) -> tuple[str, int]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", _CHILD, str(path), name, str(budget)], capture_output=True, text=True,
                         env=env, timeout=600, cwd=ROOT)
    if out.returncode:
        return f"crashed ({out.returncode})", -1
    reason, grew = out.stdout.rsplit(maxsplit=1)
    return reason, int(grew)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget-mb", type=int, default=256, help="ORTHO_MAX_DECODED_BYTES for the reads, MiB")
    budget = ap.parse_args().budget_mb << 20
    table = Table("type", "file", "outcome", "peak RSS (MiB)", "over clean (MiB)", f"<= budget ({budget >> 20} MiB)",
                  title="peak memory of a process reading one file")
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for kind, files in cases().items():
            clean = None
            for case, name, data in files:
                path = Path(tmp) / name
                path.write_bytes(data)
                reason, grew = measure(path, name, budget)
                clean = grew if clean is None else clean
                over = grew - clean
                worst = max(worst, over / budget)
                table.add_row(kind, case, reason, f"{grew / 2**20:.0f}", f"{over / 2**20:+.0f}",
                              "yes" if grew >= 0 and over <= budget else "NO")
    Console().print(table)
    print(f"largest growth over the clean file, as a share of the budget: {worst:.2f} (goal <= 1)")


if __name__ == "__main__":
    main()
