"""Self-supervised pretraining from a shard manifest (DINOv3-style, timm ViTs). Not built yet: issue 5."""
