"""The near-duplicate search, in pass order: per-image signatures (signatures.py, of the content box borders.py
finds), the global signature search (search.py), the crop search over the pairs still apart (crop_match.py),
kept up to date between curations (incremental.py, with its saved state in index.py); its outcome is one
DupGroups (groups.py) whatever the run."""
