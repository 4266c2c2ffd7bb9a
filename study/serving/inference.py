"""Apply a model package to one normalised image with the trial's own input strategy."""

from __future__ import annotations

import numpy as np
import torch

from study.data import Split
from study.errors import SegstudyError
from study.models.registry import check_input_size
from study.serving.package import ModelPackage
from study.training import Patches, WholeImages


def probabilities(package: ModelPackage, image: np.ndarray, *, where: str = "image") -> np.ndarray:
    """Foreground probabilities (1, *spatial) of a channel-first image (C, *spatial).

    Whole-image models see the image whole, patch models slide their window with the recorded
    overlap: the code path validation and test took in the study.

    Args:
        where: what names the image in errors (`segstudy predict`: "--input PATH").

    Raises:
        SegstudyError: the image's channels or size do not suit the network.
    """
    prep = package.preprocessing
    if image.ndim != prep.spatial_dims + 1 or image.shape[0] != prep.in_channels:
        raise SegstudyError(
            f"{where}: image of shape {tuple(image.shape)} (channels first) does not suit a {prep.spatial_dims}D "
            f"model with {prep.in_channels} input channel(s)"
        )
    if prep.patch_size is None:
        problem = check_input_size(package.architecture, list(image.shape[1:]))
        if problem:
            raise SegstudyError(f"{where}: image of spatial size {list(image.shape[1:])}: {problem}")
        strategy: WholeImages | Patches = WholeImages(batch_size=1)
    else:
        strategy = Patches(
            batch_size=1,
            patch_size=prep.patch_size,
            pos_fraction=0.0,  # training-only settings: inference ignores them
            samples_per_volume=1,
            sw_batch_size=prep.sw_batch_size,
            overlap=prep.overlap,
        )
    split = Split(
        images=np.ascontiguousarray(image[None], dtype=np.float32),
        masks=np.zeros((1, 1, *image.shape[1:]), dtype=np.uint8),
        ids=("input",),
        td=np.array([np.nan]),
        spacing=tuple(prep.spacing),
    )
    with torch.no_grad():
        return strategy.predict(package.network, split, device=torch.device("cpu"))[0]
