"""Dice, HD95 and surface Dice per image, computed by MONAI, with explicit empty-mask handling.

MONAI's HausdorffDistanceMetric returns NaN when the prediction misses the structure, and a mean
that skips NaN makes HD95 look better the more a model fails. Here every image gets a number:
the worst-case policy below replaces what MONAI cannot define, and flags say which images it hit.

Adding a metric is one `Metric` entry in `METRICS` (its MONAI computation and empty-mask policy)
and its name in `study/metrics_names.py:SCORES`, which gives it its per_image.csv column and its
MLflow names (test_<name>, test_<name>/<perturbation>/<severity>) without torch for the analysis.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from monai.metrics import (
    compute_average_surface_distance,
    compute_dice,
    compute_hausdorff_distance,
    compute_surface_dice,
)

from study import metrics_names as M


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


@dataclass(frozen=True)
class Metric:
    """A registered per-image score.

    Attributes:
        name: the per_image.csv column; a name of `study.metrics_names.SCORES`.
        compute: ``compute(pred, gt, spacing, nsd_tolerance) -> one value per image``, called only
            on images where both masks are present.
        one_empty: the value when exactly one mask is empty (see `EmptyPolicy`): 0, or the
            image diagonal in mm.
        both_empty: the value when both masks are empty (a perfect answer).
    """

    name: str
    compute: MetricFn
    one_empty: Literal["zero", "worst_distance"]
    both_empty: float

    @property
    def test_key(self) -> str:
        """MLflow metric of the test-set mean, e.g. test_hd95."""
        return M.score_key(self.name)

    def condition_key(self, perturbation: str, severity: int | str) -> str:
        """MLflow metric of the mean under one condition, e.g. test_hd95/gaussian_noise/3."""
        return M.condition_key(self.name, perturbation, severity)


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("dice", _dice, one_empty="zero", both_empty=1.0),
        Metric("hd95", _hd95, one_empty="worst_distance", both_empty=0.0),
        Metric("nsd", _nsd, one_empty="zero", both_empty=1.0),
        Metric("assd", _assd, one_empty="worst_distance", both_empty=0.0),
    )
}
# per_image.csv columns and MLflow names come from SCORES; a metric missing from either is a bug.
assert tuple(METRICS) == M.SCORES, (tuple(METRICS), M.SCORES)


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
    for metric in METRICS.values():
        values = torch.full((len(rows),), float("nan"))
        if len(idx):
            values[idx] = metric.compute(pred_t[idx], gt_t[idx], spacing, nsd_tolerance).float()
        worst = policy.worst_distance if metric.one_empty == "worst_distance" else 0.0
        values[empty_pred ^ empty_gt] = worst
        values[empty_pred & empty_gt] = metric.both_empty
        for row, v in zip(rows, values.tolist()):
            row[metric.name] = v
    return rows
