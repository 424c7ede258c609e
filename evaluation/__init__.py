"""Downstream evaluation of backbones: frozen features (embed.py), kNN and linear probes
(protocols.py), metrics with patient-level bootstrap CIs (metrics.py). Fine-tuning, label
efficiency, reports and `ortho evaluate` are issue 6, not built yet."""
