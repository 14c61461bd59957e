"""Device and precision: CUDA, then Apple MPS, then CPU; bf16 where the GPU has it.

Training precision is decided here, in ``train_precision``, for every trainer (SFT, the PB
model, the reward models):

- the weights the optimizer updates (master weights) and AdamW's states are always fp32.
  Section 4.1 trains "in BFLOAT16"; doing that literally (AdamW on bf16 parameters) loses
  updates: bf16 keeps 8 significant bits, so a step smaller than half the spacing between
  bf16 numbers near a weight rounds back to the weight. Near 1.0 (a LayerNorm scale) that
  spacing is 2^-7, about 0.008, and AdamW's first steps move every weight by about the
  learning rate (2e-5 in Table 3): pure bf16 leaves such weights exactly where they were;
- the forward and backward passes run under autocast in bf16 on a GPU that has it (A100,
  H100, recent consumer cards), in fp16 with a loss scaler on an older GPU (T4, V100: fp16's
  narrow range would underflow small gradients without one), and in fp32 on CPU and MPS,
  unless a bf16 compute precision is asked for (CPU autocast supports bf16; the tests use it).

Cost: 16 bytes a parameter for weights, gradients and AdamW's two states, against 8 in pure
bf16. For bloom-1b1 (1.07B parameters) that is about 17 GB before activations; the paper
profile keeps Table 3's batch of 64 as 8 x 8 accumulation steps to fit a 40 GB A100
(estimated, not measured: see ``PAPER_SFT_ACCUMULATED`` in ``diffchat.profiles``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# The dtype trainers hold and update weights in.
MASTER_DTYPE = torch.float32


def pick_device(override: str | None = None) -> torch.device:
    if override:
        return torch.device(override)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(device: torch.device, wanted: str = "auto", *, diffusion: bool = False) -> torch.dtype:
    """Inference dtype: fp32 on CPU; bf16 on a GPU that supports it; fp16 for diffusion on older GPUs (T4)."""
    if wanted != "auto":
        return getattr(torch, wanted)
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float16 if diffusion else torch.float32
    if device.type == "mps":
        return torch.float16 if diffusion else torch.float32
    return torch.float32


@dataclass(frozen=True)
class TrainPrecision:
    """fp32 master weights, and the dtype autocast computes in (None: plain fp32)."""

    compute: torch.dtype | None

    @property
    def trainer_flags(self) -> dict[str, bool]:
        """``TrainingArguments``' switches: bf16 autocast, or fp16 autocast with a loss scaler."""
        return {"bf16": self.compute == torch.bfloat16, "fp16": self.compute == torch.float16}

    def __str__(self) -> str:
        name = {torch.bfloat16: "bf16", torch.float16: "fp16 (loss scaling)"}.get(self.compute)
        return f"fp32 master weights, {name} autocast" if name else "fp32"


_WANTED = ("auto", "bfloat16", "float16", "float32")


def train_precision(device: torch.device, wanted: str = "auto") -> TrainPrecision:
    """How a trainer on ``device`` computes (see the module docstring).

    ``wanted`` is a profile's ``models.dtype``: 'auto', or the compute precision it asks for;
    'bfloat16' on a GPU without bf16 falls back to fp16 with a loss scaler.
    """
    if wanted not in _WANTED:
        raise ValueError(f"training precision {wanted!r}: choose one of {', '.join(_WANTED)}")
    if wanted == "float32":
        return TrainPrecision(None)
    if device.type == "cuda":
        if wanted == "float16" or not torch.cuda.is_bf16_supported():
            return TrainPrecision(torch.float16)
        return TrainPrecision(torch.bfloat16)
    if device.type == "cpu" and wanted == "bfloat16":
        return TrainPrecision(torch.bfloat16)
    if wanted == "float16":
        raise ValueError(f"fp16 training needs a CUDA GPU (loss scaling), not {device.type}")
    return TrainPrecision(None)
