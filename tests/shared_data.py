"""The real images in ../shared/data (its README says what each folder is); tests skip where it is absent."""

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared_data(sub: str = "") -> Path:
    path = SHARED_DATA / sub
    if not path.exists():
        pytest.skip(f"real data not available at {path} (a fresh clone has none)")
    return path
