"""Downstream evaluation of checkpoints (kNN, linear, fine-tuning, label efficiency). Not built yet: issue 6."""
