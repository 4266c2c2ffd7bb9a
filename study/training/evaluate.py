"""Validation Dice and per-image test scores from a trained model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from monai.metrics import compute_dice
from torch import nn

from study.data import Split
from study.metrics import score_images
from study.metrics_names import CLEAN, PER_IMAGE_COLUMNS
from study.training.loop import predict_probabilities


def dice_of(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean per-image Dice; MONAI's ignore_empty=False gives the same empty policy as the test."""
    p = torch.as_tensor(np.asarray(pred) > 0).float()
    g = torch.as_tensor(np.asarray(gt) > 0).float()
    return float(compute_dice(p, g, include_background=True, ignore_empty=False).mean())


def evaluate_split(
    model: nn.Module,
    split: Split,
    *,
    threshold: float,
    nsd_tolerance: float,
    batch_size: int,
    device: torch.device,
    condition: str = CLEAN,
) -> pd.DataFrame:
    """Score every image of `split`: one row per image in the per_image.csv layout."""
    probs = predict_probabilities(model, split.images, batch_size=batch_size, device=device)
    rows = score_images(probs > threshold, split.masks, spacing=split.spacing, nsd_tolerance=nsd_tolerance)
    frame = pd.DataFrame(rows)
    frame["image_id"] = list(split.ids)
    frame["condition"] = condition
    frame["td"] = np.asarray(split.td, dtype=float)
    return frame[list(PER_IMAGE_COLUMNS)]
