"""Device and precision: CUDA, then Apple MPS, then CPU; bf16 where the GPU has it."""

from __future__ import annotations

import torch


def pick_device(override: str | None = None) -> torch.device:
    if override:
        return torch.device(override)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(device: torch.device, wanted: str = "auto", *, diffusion: bool = False) -> torch.dtype:
    """fp32 on CPU; bf16 on a GPU that supports it; fp16 for diffusion on older GPUs (T4)."""
    if wanted != "auto":
        return getattr(torch, wanted)
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float16 if diffusion else torch.float32
    if device.type == "mps":
        return torch.float16 if diffusion else torch.float32
    return torch.float32
