"""Dice, HD95 and surface Dice per image, computed by MONAI, with explicit empty-mask handling.

MONAI's HausdorffDistanceMetric returns NaN when the prediction misses the structure, and a mean
that skips NaN makes HD95 look better the more a model fails. Here every image gets a number:
the worst-case policy below replaces what MONAI cannot define, and flags say which images it hit.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.metrics import (
    compute_average_surface_distance,
    compute_dice,
    compute_hausdorff_distance,
    compute_surface_dice,
)


@dataclass(frozen=True)
class EmptyPolicy:
    """What a metric is worth when the ground truth or the prediction is empty.

    A missed structure (truth present, prediction empty) and a hallucinated one (truth empty,
    prediction present) score Dice 0, surface Dice 0 and HD95 = the image diagonal in mm, the
    largest distance possible. Both empty is a perfect answer: Dice 1, HD95 0, surface Dice 1.
    """

    worst_distance: float

    @classmethod
    def for_shape(cls, shape: Sequence[int], spacing: Sequence[float]) -> EmptyPolicy:
        return cls(worst_distance=math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing))))


@contextlib.contextmanager
def _quiet_monai() -> Iterator[None]:
    # MONAI 1.5-1.6 warns about its own internal use of a deprecated argument on every call.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        yield


MetricFn = Callable[[torch.Tensor, torch.Tensor, Sequence[float], float], torch.Tensor]


def _dice(pred: torch.Tensor, gt: torch.Tensor, spacing: Sequence[float], tol: float) -> torch.Tensor:
    return compute_dice(pred, gt, include_background=True, ignore_empty=False)[:, 0]


def _hd95(pred: torch.Tensor, gt: torch.Tensor, spacing: Sequence[float], tol: float) -> torch.Tensor:
    with _quiet_monai():
        return compute_hausdorff_distance(pred, gt, include_background=True, percentile=95, spacing=list(spacing))[:, 0]


def _nsd(pred: torch.Tensor, gt: torch.Tensor, spacing: Sequence[float], tol: float) -> torch.Tensor:
    with _quiet_monai():
        return compute_surface_dice(pred, gt, class_thresholds=[tol], include_background=True, spacing=list(spacing))[:, 0]


def _assd(pred: torch.Tensor, gt: torch.Tensor, spacing: Sequence[float], tol: float) -> torch.Tensor:
    with _quiet_monai():
        return compute_average_surface_distance(
            pred, gt, include_background=True, symmetric=True, spacing=list(spacing)
        )[:, 0]


# name -> (MONAI computation, value when exactly one mask is empty, value when both are)
METRICS: dict[str, tuple[MetricFn, str, float]] = {
    "dice": (_dice, "zero", 1.0),
    "hd95": (_hd95, "worst_distance", 0.0),
    "nsd": (_nsd, "zero", 1.0),
    "assd": (_assd, "worst_distance", 0.0),
}


def score_images(
    pred: np.ndarray | torch.Tensor,
    gt: np.ndarray | torch.Tensor,
    *,
    spacing: Sequence[float],
    nsd_tolerance: float,
) -> list[dict[str, float | bool]]:
    """Score each image of a batch.

    Args:
        pred: binary prediction, shape (N, 1, *spatial).
        gt: binary ground truth, same shape.
        spacing: pixel/voxel size in mm per spatial axis (distances come out in mm).
        nsd_tolerance: surface Dice tolerance in mm.

    Returns:
        One dict per image: every metric in `METRICS`, plus flags empty_gt, empty_pred, missed.
    """
    pred_t = torch.as_tensor(np.asarray(pred) > 0).float()
    gt_t = torch.as_tensor(np.asarray(gt) > 0).float()
    if pred_t.shape != gt_t.shape:
        raise ValueError(f"prediction shape {tuple(pred_t.shape)} != ground truth shape {tuple(gt_t.shape)}")
    policy = EmptyPolicy.for_shape(pred_t.shape[2:], spacing)
    spatial = tuple(range(1, pred_t.ndim))
    empty_pred = pred_t.sum(dim=spatial) == 0
    empty_gt = gt_t.sum(dim=spatial) == 0
    both_present = ~empty_pred & ~empty_gt
    rows: list[dict[str, float | bool]] = [
        {"empty_gt": bool(g), "empty_pred": bool(p), "missed": bool(p and not g)}
        for g, p in zip(empty_gt.tolist(), empty_pred.tolist())
    ]
    idx = torch.nonzero(both_present).flatten()
    for name, (fn, one_empty, both_empty) in METRICS.items():
        values = torch.full((len(rows),), float("nan"))
        if len(idx):
            values[idx] = fn(pred_t[idx], gt_t[idx], spacing, nsd_tolerance).float()
        worst = policy.worst_distance if one_empty == "worst_distance" else 0.0
        values[empty_pred ^ empty_gt] = worst
        values[empty_pred & empty_gt] = both_empty
        for row, v in zip(rows, values.tolist()):
            row[name] = v
    return rows
