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
from monai.metrics import compute_dice
from monai.metrics.utils import get_mask_edges, get_surface_distance

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


CROP_ABOVE = 2**16  # voxels; a 256 x 256 image is not cropped, a 64^3 volume is


class Pair:
    """One image's binary prediction and truth (both present), with the surface distances every
    distance metric reads: MONAI's edge extraction and distance transform run once per image, not
    once per metric (they are most of a confirm trial's scoring time)."""

    def __init__(self, pred: torch.Tensor, gt: torch.Tensor, spacing: Sequence[float]) -> None:
        self.pred, self.gt, self.spacing = pred, gt, list(spacing)
        self._distances: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def distances(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(prediction edge -> truth, truth edge -> prediction) distances in mm, as MONAI's
        Hausdorff, surface-distance and surface-Dice metrics compute them."""
        if self._distances is None:
            # MONAI's get_edge_surface_distance, with the crop to the masks' bounding box only where
            # it pays: on a 64 x 64 image the crop's transforms cost twice the distances themselves,
            # on a 128^3 volume with a small object the crop saves more than half (same distances).
            with _quiet_monai():
                pred, gt = get_mask_edges(self.pred, self.gt, crop=self.pred.numel() > CROP_ABOVE)
                self._distances = (
                    torch.as_tensor(get_surface_distance(pred, gt, "euclidean", self.spacing)),
                    torch.as_tensor(get_surface_distance(gt, pred, "euclidean", self.spacing)),
                )
        return self._distances


MetricFn = Callable[[Pair, float], float]


def _dice(pair: Pair, tol: float) -> float:
    return float(compute_dice(pair.pred[None, None], pair.gt[None, None], include_background=True, ignore_empty=False)[0, 0])


def _hd95(pair: Pair, tol: float) -> float:
    # MONAI's compute_hausdorff_distance(percentile=95): the larger of the two directed 95th percentiles.
    return float(max(torch.quantile(d, 0.95) for d in pair.distances))


def _nsd(pair: Pair, tol: float) -> float:
    # MONAI's compute_surface_dice (no sub-voxels): the share of both edges within the tolerance.
    to_gt, to_pred = pair.distances
    return float(((to_gt <= tol).sum() + (to_pred <= tol).sum()) / (len(to_gt) + len(to_pred)))


def _assd(pair: Pair, tol: float) -> float:
    # MONAI's compute_average_surface_distance(symmetric=True): the mean over both edges' distances.
    return float(torch.cat(pair.distances).mean())


@dataclass(frozen=True)
class Metric:
    """A registered per-image score.

    Attributes:
        name: the per_image.csv column; a name of `study.metrics_names.SCORES`.
        compute: ``compute(pair, nsd_tolerance) -> value`` of one image whose masks are both
            present (`Pair`: prediction, truth, spacing and the shared surface distances).
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
    pairs = {int(i): Pair(pred_t[i, 0], gt_t[i, 0], spacing) for i in torch.nonzero(both_present).flatten()}
    for metric in METRICS.values():
        values = torch.full((len(rows),), float("nan"))
        for i, pair in pairs.items():
            values[i] = metric.compute(pair, nsd_tolerance)
        worst = policy.worst_distance if metric.one_empty == "worst_distance" else 0.0
        values[empty_pred ^ empty_gt] = worst
        values[empty_pred & empty_gt] = metric.both_empty
        for row, v in zip(rows, values.tolist()):
            row[metric.name] = v
    return rows
