"""Downstream evaluation of backbones (`ortho evaluate`): run.py runs one evaluation; its settings are
config.py, its models backbones.py, the work per task evaluator.py (frozen features from embed.py, probes from
protocols.py, fine-tuning from finetune.py, metrics with patient-level bootstrap CIs from metrics.py), and
results.py writes metrics.json and the catalog rows that report.py renders."""
