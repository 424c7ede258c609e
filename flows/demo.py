"""The embedded default workspace: the phantom tree plus the real DICOM files pydicom ships."""

from __future__ import annotations

from pathlib import Path

from catalog.workspace import Workspace
from ingest.sources import Source, add_source

DEMO_PATIENTS = 40  # enough patients for train, val and test parts of every phantom task
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


def demo_sources(data_dir: Path) -> list[Source]:
    root = Path(data_dir).absolute() / "phantom"
    sources = [
        Source("phantom-pacs", str(root / "pacs"), "phantom", labels=["csv:labels.csv"]),
        Source("phantom-public", str(root / "public"), "phantom", labels=["folder:kl_grade"], path_pattern=KL_PATTERN,
               modality="DX", body_part="knee"),
    ]
    sources += [Source(name, str(path), "public") for name, path in pydicom_folders().items()]
    return sources


def register_demo_sources(ws: Workspace, data_dir: Path) -> list[str]:
    names = []
    for source in demo_sources(data_dir):
        add_source(ws, source, replace=True)
        names.append(source.name)
    return names
