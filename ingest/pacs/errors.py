"""How a pull fails: the archive refuses us (at `sources add`), stops answering (the run ends), or refuses one
instance (that instance is quarantined and its study retried next time)."""

from __future__ import annotations

from ingest.reasons import Quarantine
from ingest.scan import SourceUnavailable


class PacsUnavailable(SourceUnavailable):
    """The archive cannot be reached, after retries: the pull stops, whole batches only, and resumes next run."""


class PacsRefused(SourceUnavailable):
    """Wrong credentials, AE title or permissions: nothing will work until the source's settings change."""


class RetrieveFailed(Quarantine):
    """One request failed for good: a quarantine reason (pacs_retrieve_failed, ...) for the instance."""
