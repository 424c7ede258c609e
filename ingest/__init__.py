"""Ingest: sources, format readers, de-identification, batch ingest into the store and catalog."""
