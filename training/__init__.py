"""Self-supervised pretraining from a shard manifest: DINOv3-style self-distillation of timm ViTs.

Entry points: `training.trainer.run_pretraining` / `train`, `python -m training` (torchrun), and
`ortho pretrain` (flows/pretrain.py). See docs/training.md."""
