"""Decoding a batch of compressed payloads on the training device (crops.device=gpu with crops.decode=device/auto).

HTJ2K codestreams go to NVIDIA nvImageCodec (nvJPEG2000) when both are installed (`pip install
nvidia-nvimgcodec-cu12 nvidia-nvjpeg2k-cu12`, the `gpu` extra) and the device is CUDA: the loader workers then only
read and draw, and the pixels are decoded straight into GPU memory. Elsewhere (no GPU, no
nvImageCodec, a PNG payload: PNG is CPU-only in every NVIDIA decoder) each payload is decoded on the CPU with the
codec's own decoder (shards/codecs.py) and copied over: the same pixels, slower, for tests and dry runs.
"""

from __future__ import annotations

import ctypes.util
import importlib.util

import numpy as np
import torch

from shards.codecs import BY_EXT

_GPU_EXTS = {"j2c"}  # what nvImageCodec decodes on the GPU among our payloads


def nvimgcodec_module():
    """nvidia.nvimgcodec, or None when it is not installed."""
    try:
        from nvidia import nvimgcodec
    except ImportError:
        return None
    return nvimgcodec


def nvjpeg2k_present() -> bool:
    """nvJPEG2000, which nvImageCodec loads for JPEG 2000 on the GPU (without it, it would decode on the CPU)."""
    return importlib.util.find_spec("nvidia.nvjpeg2k") is not None or ctypes.util.find_library("nvjpeg2k") is not None


def gpu_decode_available() -> bool:
    return torch.cuda.is_available() and nvimgcodec_module() is not None and nvjpeg2k_present()


def decode_params(nvimgcodec):
    """Each image as stored: one grey plane at its depth (nvImageCodec's default is 8-bit RGB)."""
    return nvimgcodec.DecodeParams(allow_any_depth=True, color_spec=nvimgcodec.ColorSpec.UNCHANGED)


class BatchDecoder:
    """payloads (bytes) + their extensions -> [B, H, W] uint16 on `device`, each image zero-padded to the largest."""

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        nvimgcodec = nvimgcodec_module() if self.device.type == "cuda" and gpu_decode_available() else None
        self._nv = None
        if nvimgcodec is not None:
            index = self.device.index if self.device.index is not None else torch.cuda.current_device()
            self._nv = nvimgcodec.Decoder(device_id=index), decode_params(nvimgcodec)

    @property
    def backend(self) -> str:
        return "nvimgcodec" if self._nv is not None else "cpu"

    def __call__(self, payloads: list[bytes], exts: list[str]) -> torch.Tensor:
        planes = self._decode_gpu(payloads, exts) if self._nv is not None and set(exts) <= _GPU_EXTS else None
        if planes is None:
            planes = [torch.from_numpy(BY_EXT[e].decode(p)).to(self.device, non_blocking=True)
                      for p, e in zip(payloads, exts)]
        h, w = max(p.shape[0] for p in planes), max(p.shape[1] for p in planes)
        # int16 as the container: torch's uint16 has few kernels (copies, views); the bits are the same
        out = torch.zeros((len(planes), h, w), dtype=torch.int16, device=self.device)
        for i, p in enumerate(planes):
            out[i, :p.shape[0], :p.shape[1]] = p.view(torch.int16) if p.dtype == torch.uint16 else p.to(torch.int16)
        return out.view(torch.uint16)

    def _decode_gpu(self, payloads: list[bytes], exts: list[str]) -> list[torch.Tensor] | None:
        decoder, params = self._nv
        images = decoder.decode(payloads, params=params)
        if any(img is None for img in images):
            return None  # one the GPU decoder refused: the CPU decoder will say what is wrong with it
        return [self._tensor(img).reshape(img.shape[0], img.shape[1]) for img in images]

    def _tensor(self, img) -> torch.Tensor:
        """An nvImageCodec image as a tensor on the device: GPU buffers through DLPack, host ones through numpy."""
        if img.buffer_kind == nvimgcodec_module().ImageBufferKind.STRIDED_HOST:
            return torch.from_numpy(np.asarray(img)).to(self.device)
        return torch.as_tensor(img, device=self.device)
