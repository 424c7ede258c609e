"""The bundled config files, shipped as package data: pretraining experiments (pretrain/*.yaml, named by
`--config cpu-tiny`) and pipeline files (pipelines/demo.yaml, for `ortho demo`)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def path(relative: str = "") -> Path:
    """A bundled file or folder, e.g. path("pipelines/demo.yaml"), from the source tree or an installed wheel."""
    return Path(str(resources.files(__name__).joinpath(relative)))
