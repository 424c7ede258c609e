"""Curation: near-duplicates, quality flags, patient-level splits, leakage guard, tasks, DICOM export."""
