"""The settings of an ingest run (`ortho ingest`, a pipeline file's `ingest:` section), with their defaults, written
here once. The read limits and the compaction threshold come from the environment (flows/settings.py)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class IngestConfig:
    batch_size: int = 64  # files per task
    retry_quarantined: bool = False  # read quarantined files again
    burned_in: str | None = None  # this run's burned-in text policy (mask, quarantine, off); None: each source's

    def __post_init__(self):
        if self.burned_in is not None:
            from ingest.sources import check_burned_in

            check_burned_in(self.burned_in)
