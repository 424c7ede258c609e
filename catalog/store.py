"""Content-addressed image store: store/ab/<image_id>.png, lossless, written once."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from catalog.files import atomic_write
from catalog.pixel_budget import PixelsRefused
from catalog.pixels import decode_png, encode_png


class ImageStore:
    def __init__(self, root: Path, compress_level: int = 1, tmp_dir: Path | None = None):
        self.root = Path(root)
        self.compress_level = compress_level
        self.tmp_dir = tmp_dir

    @staticmethod
    def relpath(image_id: str) -> str:
        return f"store/{image_id[:2]}/{image_id}.png"

    def path(self, image_id: str) -> Path:
        return self.root / image_id[:2] / f"{image_id}.png"

    def put(self, image_id: str, pixels: np.ndarray) -> bool:
        """Write the object unless it exists. Returns True when this call wrote it."""
        path = self.path(image_id)
        if path.exists():
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        # not fsynced one by one (it never was): a large ingest stores millions of images
        atomic_write(path, encode_png(pixels, self.compress_level), self.tmp_dir, fsync=False)
        return True

    def get(self, image_id: str) -> np.ndarray:
        return decode_png(self.path(image_id).read_bytes())

    def open(self, image_id: str, rows: int | None = None, cols: int | None = None) -> np.ndarray:
        """The stored pixels, checked against the catalog's `rows` x `cols` and the pixel budget before decoding;
        every failure (a missing object included) is a PixelsRefused with a reason, for the stage to exclude the
        image and go on."""
        try:
            data = self.path(image_id).read_bytes()
        except FileNotFoundError:
            raise PixelsRefused("missing_object") from None
        return decode_png(data, rows, cols)
