"""Validation Dice and per-image test scores from predicted probabilities."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from monai.metrics import compute_dice

from study.data import Split
from study.metrics import score_images
from study.metrics_names import CLEAN, PER_IMAGE_COLUMNS


def dice_per_image(probs: Sequence[np.ndarray], split: Split, *, threshold: float) -> np.ndarray:
    """Dice of each image; MONAI's ignore_empty=False gives the same empty policy as the test."""
    scores = []
    for i, p in enumerate(probs):
        pred = torch.as_tensor(p[None] > threshold).float()
        gt = torch.as_tensor(split.volume(i)[1][None] > 0).float()
        scores.append(float(compute_dice(pred, gt, include_background=True, ignore_empty=False)[0, 0]))
    return np.asarray(scores)


def dice_of(probs: Sequence[np.ndarray], split: Split, *, threshold: float) -> float:
    """Mean per-image Dice (validation)."""
    return float(np.mean(dice_per_image(probs, split, threshold=threshold)))


def evaluate_split(
    probs: Sequence[np.ndarray],
    split: Split,
    *,
    threshold: float,
    nsd_tolerance: float,
    condition: str = CLEAN,
) -> pd.DataFrame:
    """Score every image of `split`: one row per image in the per_image.csv layout."""
    rows = []
    for i, p in enumerate(probs):
        gt = split.volume(i)[1]
        rows.extend(score_images(p[None] > threshold, gt[None], spacing=split.spacing, nsd_tolerance=nsd_tolerance))
    frame = pd.DataFrame(rows)
    frame["image_id"] = list(split.ids)
    frame["condition"] = condition
    frame["td"] = np.asarray(split.td, dtype=float)
    frame["fbr"] = split.fbr
    return frame[list(PER_IMAGE_COLUMNS)]
