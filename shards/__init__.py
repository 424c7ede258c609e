"""Shard sets: SQL selection -> deterministic WebDataset tars + manifest; verification; streaming reader."""
