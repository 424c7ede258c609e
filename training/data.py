"""From a shard manifest to a multi-crop batch stream, after checking the manifest is trainable."""

from __future__ import annotations

from pathlib import Path

import torch

from shards.device_decode import gpu_decode_available
from shards.reader import ShardStream
from training.inputs import ManifestInfo, TrainingError, check_manifest  # noqa: F401  (their home: light)
from training.augment import CollateCrops, CollatePlans, CropPlan, MultiCrop
from training.config import CropsConfig, PretrainConfig


def decode_on_device(crops: CropsConfig, codec: dict, device: torch.device | str | None) -> bool:
    """Whether the workers hand payloads over compressed, for training/device_crops.py to decode (crops.decode)."""
    mode = crops.decode
    if mode == "device" and crops.device != "gpu":
        raise TrainingError("crops.decode=device needs crops.device=gpu (the crops are cut where the pixels are)")
    if mode == "workers" or crops.device != "gpu":
        return False
    if mode == "device":
        return True
    return (codec.get("name") == "htj2k" and device is not None and torch.device(device).type == "cuda"
            and gpu_decode_available())


def build_stream(cfg: PretrainConfig, manifest: str, mean: float, std: float, patch_size: int,
                 rank: int | None = None, world_size: int | None = None, device: torch.device | str | None = None) -> ShardStream:
    t, c, loss = cfg.train, cfg.crops, cfg.loss
    if c.global_size % patch_size:
        raise TrainingError(f"crops.global_size {c.global_size} is not a multiple of the patch size {patch_size}")
    # crops.device=gpu: the workers only decode and draw; training/device_crops.py cuts the crops (Learner.crops)
    on_device = c.device == "gpu"
    transform = CropPlan(c, seed=t.seed) if on_device else MultiCrop(c, mean, std, seed=t.seed)
    mask_probability = loss.mask_probability if cfg.ibot else 0.0  # no iBOT, no masks drawn
    collate = (CollatePlans if on_device else CollateCrops)(c.global_size // patch_size, loss.mask_ratio,
                                                             mask_probability, seed=t.seed)
    stream = ShardStream(manifest, shuffle_buffer=t.shuffle_buffer, seed=t.seed, transform=transform,
                         batch_size=cfg.optim.batch_size, collate=collate, rank=rank, world_size=world_size,
                         num_workers=t.num_workers)
    stream.decode = not decode_on_device(c, stream.manifest.codec, device)
    if len(stream) == 0:
        raise TrainingError(f"manifest {Path(manifest).name} holds {stream.manifest.samples} images: fewer than one "
                            f"batch of {cfg.optim.batch_size} per reader; lower optim.batch_size or "
                            "train.num_workers")
    return stream


def make_loader(stream: ShardStream, num_workers: int, pin_memory: bool = False) -> torch.utils.data.DataLoader:
    # A private generator: creating the workers must not draw from the global RNG, or a resumed run
    # (which creates them at another step) would see other dropout draws than an uninterrupted one.
    # pin_memory (on CUDA): batches are copied to the GPU asynchronously, the uint16 pixels of the gpu crop path too.
    return torch.utils.data.DataLoader(stream, batch_size=None, num_workers=num_workers,
                                       prefetch_factor=4 if num_workers else None,
                                       generator=torch.Generator().manual_seed(0),
                                       persistent_workers=False, pin_memory=pin_memory)
