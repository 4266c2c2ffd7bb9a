"""What a trial does differently on a GPU: mixed precision, cuDNN autotuning, data kept on the device.

The CPU path must give the numbers it always gave (the same spec and seed give the same numbers,
docs/ARCHITECTURE.md 2), so everything here is a no-op on CPU unless the spec asks for bf16
explicitly: `autocast(None)` is a null context and `resident` returns None.

On a GPU a small 2D trial spends most of its time waiting for the host (measured in issue 17: GPU
utilisation 0% in 311 of 365 samples): per-step host-to-device copies of numpy batches, fp32
kernels, and cuDNN's default algorithm choice. bf16 autocast halves the bytes every kernel moves
and needs no loss scaling (its exponent range is fp32's); cuDNN autotuning pays off because every
step of a trial has the same input shape.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from study import process_state
from study.data import Split

# A split is copied to the GPU once per trial only if it takes at most this share of the trial's
# part of the device's memory (resources.gpu x total): the rest is the network's and its activations'.
RESIDENT_SHARE = 0.25


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a trial on `device`, or None for plain fp32.

    auto: bf16 on a CUDA device that supports it, else fp32 (so CPU numbers are unchanged);
    bf16: bf16 on CUDA and on CPU; fp32: never.

    Raises:
        ValueError: bf16 asked for on a CUDA device without bf16 support (a deterministic failure).
    """
    if precision == "fp32":
        return None
    cuda = device.type == "cuda"
    supported = cuda and torch.cuda.is_bf16_supported()
    if precision == "auto":
        return torch.bfloat16 if supported else None
    if cuda and not supported:
        raise ValueError(f"training.precision: bf16 is not supported by {torch.cuda.get_device_name(device)}; use auto or fp32")
    return torch.bfloat16


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    """Mixed precision around a forward pass; nothing at all when `dtype` is None."""
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def prepare_device(device: torch.device) -> None:
    """Process-wide settings for a trial on `device`: cuDNN autotuning on CUDA, nothing on CPU."""
    if device.type == "cuda":
        process_state.autotune_cudnn()


@dataclass
class ResidentSplit:
    """A stacked split held on the GPU for the whole trial: batches are indexed there, so a step
    copies nothing from the host and needs no DataLoader workers (that would compete for the
    trial's few CPUs). Masks are stored as float32, the dtype the loss takes."""

    images: torch.Tensor
    masks: torch.Tensor

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def take(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        at = torch.as_tensor(idx, device=self.images.device)
        return self.images.index_select(0, at), self.masks.index_select(0, at)


def resident(split: Split, device: torch.device, *, gpu_share: float) -> ResidentSplit | None:
    """`split` copied onto `device` when it is a CUDA device, the split is stacked (equal shapes)
    and small enough (RESIDENT_SHARE of the trial's share of the device memory); else None, and
    the trial feeds batches from the host as on CPU."""
    if device.type != "cuda" or not split.stacked or len(split) == 0:
        return None
    total = torch.cuda.get_device_properties(device).total_memory
    need = split.images.nbytes + split.masks.size * 4
    if need > RESIDENT_SHARE * total * min(1.0, max(gpu_share, 0.0)):
        return None
    return ResidentSplit(
        images=torch.tensor(split.images, device=device),  # a copy: object-store arrays are read-only
        masks=torch.tensor(split.masks, device=device, dtype=torch.float32),
    )


__all__ = ["RESIDENT_SHARE", "ResidentSplit", "autocast", "prepare_device", "resident", "resolve_precision"]
