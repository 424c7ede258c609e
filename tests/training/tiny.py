"""Config overrides that make a pretraining run tiny enough for a test (seconds on a CPU)."""

TINY = ["model.name=vit_pico_patch8_dinov3", "head.prototypes=128", "head.ibot_prototypes=128", "head.hidden_dim=64",
        "head.bottleneck_dim=32", "crops.global_size=32", "crops.local_size=16", "crops.local_crops=2",
        "optim.batch_size=8", "optim.warmup_steps=2", "loss.teacher_temp_warmup_steps=2", "train.log_every=1",
        "train.num_workers=0", "train.tensorboard=false", "train.shuffle_buffer=20", "model.drop_path=0.1"]
