"""Patch-based training and sliding-window inference (the 3D "context" study, docs/ARCHITECTURE.md 4.2).

Training crops come from MONAI's RandCropByPosNegLabel with `pos_fraction` of crops centred on
foreground; unlike the reference study, that share is a study factor. Every crop's foreground
share is returned so the trial can log the distribution it actually trained on. Inference runs
MONAI's sliding_window_inference with roi = the training patch, so the network never sees an
input shape it was not trained on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from monai.transforms import RandCropByPosNegLabel, SpatialPad
from torch import nn


def sample_patches(
    image: np.ndarray,
    mask: np.ndarray,
    *,
    patch_size: int,
    pos_fraction: float,
    num_samples: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw `num_samples` crops of side `patch_size` from one volume (C, *spatial).

    A volume smaller than the patch is zero-padded first. `pos_fraction` is the probability that
    a crop is centred on a foreground voxel (MONAI pos / (pos + neg)). A patch that covers the
    whole volume has one possible position, so it is taken once: `num_samples` copies of the
    same crop would cost as many steps' compute and teach nothing more.

    Returns:
        (images (num_samples, C, *patch), masks (num_samples, 1, *patch))
    """
    spatial = [patch_size] * (image.ndim - 1)
    if all(side <= patch_size for side in image.shape[1:]):
        num_samples = 1
    pad = SpatialPad(spatial_size=spatial)
    # Copies: arrays from Ray's object store are read-only, and a tensor over them is undefined
    # behaviour if written (torch warns once per process); one volume's copy costs little.
    img = pad(torch.tensor(image))
    lab = pad(torch.tensor(mask))
    crop = RandCropByPosNegLabel(
        spatial_size=spatial,
        pos=pos_fraction,
        neg=1.0 - pos_fraction,
        num_samples=num_samples,
        allow_smaller=False,
    )
    crop.set_random_state(seed=seed)
    # The same crop centres for image and label: crop the label first, then reuse its centres.
    labels = crop(lab, label=lab, randomize=True)
    images = crop(img, label=lab, randomize=False)
    return (
        np.stack([np.asarray(x) for x in images]).astype(np.float32),
        np.stack([np.asarray(x) for x in labels]).astype(np.uint8),
    )


def foreground_fraction(masks: np.ndarray) -> np.ndarray:
    """Share of foreground voxels in each patch of a batch (N, 1, *patch)."""
    return masks.reshape(len(masks), -1).mean(axis=1)


def fbr(masks: np.ndarray) -> np.ndarray:
    """Foreground-to-background ratio of each patch or volume (N, 1, *spatial); inf if all foreground."""
    fg = masks.reshape(len(masks), -1).sum(axis=1).astype(float)
    bg = masks.reshape(len(masks), -1).shape[1] - fg
    with np.errstate(divide="ignore"):
        return np.where(bg > 0, fg / np.maximum(bg, 1), np.inf)


@torch.no_grad()
def sliding_window_probabilities(
    model: nn.Module,
    volume: np.ndarray,
    *,
    patch_size: int,
    sw_batch_size: int,
    overlap: float,
    device: torch.device,
) -> np.ndarray:
    """Foreground probabilities for one volume (C, *spatial) -> (1, *spatial), any spatial size."""
    model.eval()
    x = torch.tensor(volume[None], device=device)
    roi: Sequence[int] = [patch_size] * (volume.ndim - 1)
    predictor: Callable[[torch.Tensor], torch.Tensor] = lambda t: torch.sigmoid(model(t))  # noqa: E731
    out = sliding_window_inference(x, roi_size=roi, sw_batch_size=sw_batch_size, predictor=predictor, overlap=overlap)
    return out[0].float().cpu().numpy()  # .float(): bf16 under autocast; a no-op in fp32
