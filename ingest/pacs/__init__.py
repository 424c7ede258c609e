"""PACS sources: studies found by query and retrieved instance by instance, over DICOMweb or DIMSE.

A PACS source is ingested by the same flow as a folder: the listing (pull.py) turns the archive's studies into
one entry per instance, and each batch retrieves its instances into memory (client.py) and hands the bytes to the
same readers, de-identification and quarantine as a file. Nothing unscrubbed is written anywhere.
"""
