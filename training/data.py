"""From a shard manifest to a multi-crop batch stream, after checking the manifest is trainable."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from catalog.errors import OrthoError
from catalog.files import file_sha256, is_remote, local_path
from shards.device_decode import gpu_decode_available
from shards.manifest import Manifest, shard_urls
from shards.reader import ShardStream
from training.augment import CollateCrops, CollatePlans, CropPlan, MultiCrop


class TrainingError(OrthoError, ValueError):
    """A run that cannot start or go on; the message is one line and names what to change."""


@dataclass
class ManifestInfo:
    path: str
    sha256: str
    name: str
    samples: int
    shards: int
    evaluation: bool
    catalog_snapshot: dict
    counts: dict  # images per modality, body part, source, split, bit depth: what the run learns from


def check_manifest(path: str | Path, verify: bool = True) -> ManifestInfo:
    """Exists, parses, is not empty, is not an evaluation set, and (verify) every shard's sha256 matches."""
    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"manifest {path} does not exist")
    raw = path.read_bytes()
    try:
        manifest = Manifest.read(path)
    except Exception as e:
        raise TrainingError(f"manifest {path} is not a shard manifest: {type(e).__name__}: {str(e)[:120]}") from None
    if manifest.samples == 0 or not manifest.shards:
        raise TrainingError(f"manifest {path} selects no images: nothing to train on")
    if manifest.evaluation:
        raise TrainingError(f"shard set '{manifest.name}' was built with --evaluation (it keeps held-out images); "
                            "pretrain on a selection built without it")
    for entry, url in zip(manifest.shards, shard_urls(str(path), manifest)):
        shard = Path(local_path(url))
        if is_remote(url):
            continue  # remote shards are checked as they stream
        if not shard.is_file():
            raise TrainingError(f"shard {entry.file} of manifest {path.name} is missing")
        if shard.stat().st_size != entry.bytes:
            raise TrainingError(f"shard {entry.file} is {shard.stat().st_size} bytes, the manifest says {entry.bytes}")
        if verify and file_sha256(shard) != entry.sha256:
            raise TrainingError(f"shard {entry.file} fails its sha256 checksum: rebuild the shard set")
    return ManifestInfo(str(path.absolute()), hashlib.sha256(raw).hexdigest(), manifest.name, manifest.samples,
                        len(manifest.shards), manifest.evaluation, manifest.catalog_snapshot,
                        dict(getattr(manifest, "counts", None) or {}))


def decode_on_device(crops: dict, codec: dict, device: torch.device | str | None) -> bool:
    """Whether the workers hand payloads over compressed, for training/device_crops.py to decode (crops.decode)."""
    mode = crops["decode"]
    if mode == "device" and crops["device"] != "gpu":
        raise TrainingError("crops.decode=device needs crops.device=gpu (the crops are cut where the pixels are)")
    if mode == "workers" or crops["device"] != "gpu":
        return False
    if mode == "device":
        return True
    return (codec.get("name") == "htj2k" and device is not None and torch.device(device).type == "cuda"
            and gpu_decode_available())


def build_stream(cfg: dict, manifest: str, mean: float, std: float, patch_size: int, rank: int | None = None,
                 world_size: int | None = None, device: torch.device | str | None = None) -> ShardStream:
    t, c, loss = cfg["train"], cfg["crops"], cfg["loss"]
    if c["global_size"] % patch_size:
        raise TrainingError(f"crops.global_size {c['global_size']} is not a multiple of the patch size {patch_size}")
    # crops.device=gpu: the workers only decode and draw; training/device_crops.py cuts the crops (Learner.crops)
    on_device = c["device"] == "gpu"
    transform = CropPlan(c, seed=t["seed"]) if on_device else MultiCrop(c, mean, std, seed=t["seed"])
    collate = (CollatePlans if on_device else CollateCrops)(c["global_size"] // patch_size, loss["mask_ratio"],
                                                             loss["mask_probability"], seed=t["seed"])
    stream = ShardStream(manifest, shuffle_buffer=t["shuffle_buffer"], seed=t["seed"], transform=transform,
                         batch_size=cfg["optim"]["batch_size"], collate=collate, rank=rank, world_size=world_size,
                         num_workers=t["num_workers"])
    stream.decode = not decode_on_device(c, stream.manifest.codec, device)
    if len(stream) == 0:
        raise TrainingError(f"manifest {Path(manifest).name} holds {stream.manifest.samples} images: fewer than one "
                            f"batch of {cfg['optim']['batch_size']} per reader; lower optim.batch_size or "
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
