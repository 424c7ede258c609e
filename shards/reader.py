"""Streaming a shard set into training: a webdataset pipeline per reader, balanced across ranks.

Readers are (rank, worker) pairs. Each epoch the shard list is shuffled with (seed, epoch) and
dealt to readers; when there are fewer shards than readers, every reader streams all shards and
keeps every n-th sample. Every reader yields exactly the same number of samples, the smallest any
reader can fill (the manifest's per-shard counts make this computable everywhere without
communication), so DDP ranks always see equal batch counts; the few samples beyond it are
dropped for that epoch only (the next epoch deals shards differently).

Resume guarantee: given the number of batches this rank already consumed in the epoch (`step`),
a restarted job yields exactly the batches an uninterrupted one would have yielded next, when
batching happens here (`batch_size=`) and the DataLoader uses batch_size=None. Skipped samples
are read from the tar stream but not decoded or transformed.
"""

from __future__ import annotations

import itertools
import json
import random
from typing import Any, Callable, Iterator

import numpy as np
import torch
import webdataset as wds

from catalog.errors import BrokenInvariant
from shards.codecs import decode_sample_pixels, payload, payload_shape
from shards.manifest import Manifest, shard_urls


def _rank_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """The caller's (training passes its DistContext's), else the process group's, else a single process."""
    if rank is not None and world_size is not None:
        return rank, world_size
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def decode_sample(sample: dict) -> dict:
    """Exact decode of the payload, whatever its codec (shards/codecs.py): 16-bit stays uint16 (webdataset's image
    decoders would drop to 8 bits)."""
    return {"__key__": sample["__key__"], "image": decode_sample_pixels(sample), "meta": json.loads(sample["json"])}


def payload_sample(sample: dict) -> dict:
    """The payload left compressed, for decoding on the training device (shards/device_decode.py); its size is read
    from its header."""
    codec, data = payload(sample)
    return {"__key__": sample["__key__"], "payload": data, "ext": codec.ext, "shape": payload_shape(codec.ext, data),
            "meta": json.loads(sample["json"])}


class ShardStream(torch.utils.data.IterableDataset):
    def __init__(self, manifest: str, *, base: str | None = None, shuffle_buffer: int = 1000, seed: int = 0,
                 transform: Callable[[dict], Any] | None = None, batch_size: int | None = None,
                 collate: Callable[[list], Any] | None = None, rank: int | None = None, world_size: int | None = None,
                 num_workers: int | None = None, decode: bool = True):
        self.manifest_path = str(manifest)
        self.manifest = Manifest.read(self.manifest_path)
        self.urls = shard_urls(self.manifest_path, self.manifest, base)
        self.counts = [s.samples for s in self.manifest.shards]
        self.shuffle_buffer, self.seed, self.transform = shuffle_buffer, seed, transform
        self.batch_size, self.collate = batch_size, collate or torch.utils.data.default_collate
        # Resolved here, in the training process: DataLoader workers have no process group.
        self._rank, self._world = _rank_world(rank, world_size)
        self.num_workers = num_workers  # readers per rank; set it to the DataLoader's num_workers
        self.decode = decode  # False: samples keep their compressed payload (payload_sample)
        self.epoch, self.step = 0, 0

    def set_epoch(self, epoch: int, step: int = 0) -> None:
        """Start `epoch`; `step` batches of it were already consumed by this rank (resume)."""
        self.epoch, self.step = epoch, step
        for stage in (self.transform, self.collate):  # per-epoch augmentation seeds travel to the workers
            if hasattr(stage, "set_epoch"):
                stage.set_epoch(epoch)

    def _plan(self, world: int, workers: int) -> tuple[list[list[int]], int, bool]:
        readers = world * workers
        order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.counts)).tolist()
        if len(order) >= readers:
            dealt = [order[r::readers] for r in range(readers)]
            cap = min(sum(self.counts[i] for i in d) for d in dealt)
            return dealt, cap, False
        return [order] * readers, sum(self.counts) // readers, True

    def per_reader_samples(self) -> int:
        return self._plan(self._world, self.num_workers or 1)[1]

    def __len__(self) -> int:
        """Samples (or batches, with batch_size) per rank per epoch."""
        cap, workers = self.per_reader_samples(), self.num_workers or 1
        return workers * (cap // self.batch_size if self.batch_size else cap)

    def __iter__(self) -> Iterator[Any]:
        rank, world = self._rank, self._world
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        if self.num_workers is not None and workers != max(self.num_workers, 1):
            raise BrokenInvariant(f"ShardStream was told num_workers={self.num_workers}, the DataLoader runs {workers}")
        dealt, cap, interleave = self._plan(world, workers)
        # The DataLoader takes batches from workers round-robin, starting at worker 0 on every
        # start; after `step` batches the next one is due from stream step % workers, so this
        # worker takes over that stream.
        stream = (worker + self.step) % workers
        reader = rank * workers + stream
        consumed = (self.step - stream + workers - 1) // workers if self.step > stream else 0
        skip = consumed * (self.batch_size or 1)
        stages = [wds.SimpleShardList([self.urls[i] for i in dealt[reader]]), read_tar_samples]
        if interleave:
            readers = world * workers
            stages.append(_every(readers, reader))
        stages += [
            wds.shuffle(self.shuffle_buffer, initial=min(self.shuffle_buffer, 100),
                        rng=random.Random(hash((self.seed, self.epoch, reader)) & 0xFFFFFFFF)),
            _slice(skip, cap),
            wds.map(decode_sample if self.decode else payload_sample),
        ]
        if self.transform is not None:
            stages.append(wds.map(self.transform))
        if self.batch_size:
            stages.append(wds.batched(self.batch_size, collation_fn=self.collate, partial=False))
        return iter(wds.DataPipeline(*stages))


def read_tar_samples(src: Iterator[dict]) -> Iterator[dict]:
    """Shard urls -> samples {"__key__", "png" or "j2c", "json", "__url__"}.

    The shards are plain USTAR archives written by shards.writer, so headers are parsed directly
    (name, size, type) instead of through `tarfile`, which costs about as much as decoding a
    small PNG. Streams are opened with webdataset's gopen (paths, http(s) via curl, pipe:)."""
    for item in src:
        url = item["url"]
        stream = _open(url)
        try:
            current: dict | None = None
            while True:
                header = stream.read(512)
                if len(header) < 512:
                    if header:
                        raise OSError(f"{url}: truncated tar header")
                    break
                if header == _ZERO_BLOCK:
                    break
                name = header[:100].split(b"\0", 1)[0].decode()
                size = int(header[124:136].split(b"\0", 1)[0].strip() or b"0", 8)
                data = stream.read(size)
                if len(data) < size:
                    raise OSError(f"{url}: truncated member {name}")
                stream.read((512 - size % 512) % 512)
                if header[156:157] not in (b"0", b"\0"):
                    continue  # not a regular file
                key, _, ext = name.partition(".")
                if current is None or current["__key__"] != key:
                    if current is not None:
                        yield current
                    current = {"__key__": key, "__url__": url}
                current[ext] = data
            if current is not None:
                yield current
        finally:
            stream.close()


_ZERO_BLOCK = bytes(512)
_FSSPEC = ("s3://", "gs://", "gcs://", "az://", "abfs://", "memory://", "hf://")


def _open(url: str):
    """Object stores through fsspec (s3fs, gcsfs, ... when installed); paths, http(s) and pipe: through gopen."""
    if url.startswith(_FSSPEC):
        import fsspec

        return fsspec.open(url, "rb").open()
    return wds.gopen(url, "rb")


def _every(n: int, k: int):
    def stage(src):
        for i, sample in enumerate(src):
            if i % n == k:
                yield sample
    return stage


def _slice(skip: int, stop: int):
    def stage(src):
        yield from itertools.islice(src, skip, stop)
    return stage


def build_loader(manifest: str, *, batch_size: int, num_workers: int = 0, **kwargs) -> torch.utils.data.DataLoader:
    """A DataLoader over the shard set: batches are made in the readers, so resume is exact."""
    dataset = ShardStream(manifest, batch_size=batch_size, num_workers=num_workers, **kwargs)
    return torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=num_workers,
                                       persistent_workers=False, prefetch_factor=4 if num_workers else None)
