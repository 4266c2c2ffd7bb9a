"""How a trial feeds its network: whole images, or random patches with sliding-window inference.

Both strategies share one interface so the training loop and the evaluation never ask which one
they have: `batches` yields training batches for one epoch, `predict` gives per-image foreground
probabilities at the input's own shape.

On a GPU both take an autocast dtype (`amp`, study.training.device.accelerator) and whole images may come
from a split kept on the device (`ResidentSplit`); on CPU `amp` is None and nothing changes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from study.data import Split
from study.training.device.accelerator import ResidentSplit, autocast
from study.training.inputs.patches import foreground_fraction, sample_patches, sliding_window_probabilities

Batch = tuple[np.ndarray, np.ndarray] | tuple[torch.Tensor, torch.Tensor]  # tensors: a ResidentSplit


@dataclass
class WholeImages:
    """Whole images in shuffled mini-batches; inference on whole images (2D studies)."""

    batch_size: int
    amp: torch.dtype | None = None

    def steps(self, split: Split | ResidentSplit) -> int:
        """Optimiser steps per epoch: the batches `batches` yields (a learning-rate schedule counts them)."""
        return math.ceil(len(split) / self.batch_size)

    def batches(self, split: Split | ResidentSplit, rng: np.random.Generator) -> Iterator[Batch]:
        order = rng.permutation(len(split))
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            if isinstance(split, ResidentSplit):
                yield split.take(idx)
            elif split.stacked:
                yield split.images[idx], split.masks[idx]
            else:
                yield np.stack([split.images[i] for i in idx]), np.stack([split.masks[i] for i in idx])

    @torch.no_grad()
    def predict(self, model: nn.Module, split: Split | ResidentSplit, *, device: torch.device) -> list[np.ndarray]:
        model.eval()
        out: list[np.ndarray] = []
        for start in range(0, len(split), self.batch_size):
            stop = min(start + self.batch_size, len(split))
            if isinstance(split, ResidentSplit):
                x = split.images[start:stop]
            else:
                chunk = [split.volume(i)[0] for i in range(start, stop)]
                x = torch.tensor(np.stack(chunk), device=device)  # a copy: object-store arrays are read-only
            with autocast(device, self.amp):
                logits = model(x)
            out.extend(torch.sigmoid(logits.float()).cpu().numpy())  # .float(): a no-op in fp32
        return out


@dataclass
class Patches:
    """`samples_per_volume` random crops from each of `batch_size` volumes per step; sliding-window
    inference with the same patch size. Records every training crop's foreground share."""

    batch_size: int
    patch_size: int
    pos_fraction: float
    samples_per_volume: int
    sw_batch_size: int
    overlap: float
    patch_foreground: list[float] = field(default_factory=list)
    amp: torch.dtype | None = None

    def steps(self, split: Split) -> int:
        """Optimiser steps per epoch: one per `batch_size` volumes, as `batches` yields them."""
        return math.ceil(len(split) / self.batch_size)

    def batches(self, split: Split, rng: np.random.Generator) -> Iterator[Batch]:
        order = rng.permutation(len(split))
        for start in range(0, len(order), self.batch_size):
            images, masks = [], []
            for i in order[start : start + self.batch_size]:
                image, mask = split.volume(int(i))
                x, y = sample_patches(
                    image,
                    mask,
                    patch_size=self.patch_size,
                    pos_fraction=self.pos_fraction,
                    num_samples=self.samples_per_volume,
                    seed=int(rng.integers(2**31 - 1)),
                )
                images.append(x)
                masks.append(y)
            y_all = np.concatenate(masks)
            self.patch_foreground.extend(foreground_fraction(y_all).tolist())
            yield np.concatenate(images), y_all

    def predict(self, model: nn.Module, split: Split, *, device: torch.device) -> list[np.ndarray]:
        with autocast(device, self.amp):
            return self._predict(model, split, device=device)

    def _predict(self, model: nn.Module, split: Split, *, device: torch.device) -> list[np.ndarray]:
        return [
            sliding_window_probabilities(
                model,
                split.volume(i)[0],
                patch_size=self.patch_size,
                sw_batch_size=self.sw_batch_size,
                overlap=self.overlap,
                device=device,
            )
            for i in range(len(split))
        ]
