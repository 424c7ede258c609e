"""A batch task run again after its part was committed (its worker lost before it could answer) reports what the
lost attempt did, so a run's summary still counts every file once."""

from ingest.batch import BatchSpec, process_batch
from ingest.run import ingest_source
from ingest.sources import Source, add_source


def test_a_retried_committed_batch_reports_the_committed_counts(ws, phantom_root):
    add_source(ws, Source("pacs", str(phantom_root / "pacs"), "internal", labels=["csv:labels.csv"]))
    pairs = []

    def twice(ws_, paths):
        for path in paths:
            first = process_batch(ws_, BatchSpec.load(path))
            again = process_batch(ws_, BatchSpec.load(path))  # the part exists now: nothing written, counts read back
            pairs.append((first, again))
            yield again

    summary = ingest_source(ws, "pacs", batch_size=16, map_batches=twice)
    assert summary.result.files == summary.files_seen == 100
    assert sum(first.quarantined.total() for first, _ in pairs) == 7
    for first, again in pairs:
        assert (again.files, again.images, again.cleaned, again.bytes) == \
            (first.files, first.images, first.cleaned, first.bytes)
        assert again.quarantined == first.quarantined and again.formats == first.formats
