"""Shared pieces of the embedded default data: the KL path pattern and the real DICOM folders that
pydicom (and pydicom-data, when installed) ship. The demo itself is a pipeline file:
configs/pipelines/demo.yaml."""

from __future__ import annotations

from pathlib import Path

KL_PATTERN = r"(?P<split>train|val|test)/(?P<label>\d)/(?P<patient>\d+)(?P<laterality>[LR])\.png"


def pydicom_folders() -> dict[str, Path]:
    """pydicom's own test files and, when installed, pydicom-data's (real CR, MR, CT, JPEG-LS, RLE...)."""
    import pydicom

    found = {"pydicom-test-files": Path(pydicom.__file__).parent / "data" / "test_files"}
    try:
        import data_store  # the pydicom-data package

        found["pydicom-data"] = Path(data_store.__file__).parent / "data"
    except ImportError:
        pass
    return {k: v for k, v in found.items() if v.is_dir()}
