"""Per-image metrics: MONAI values, the declared empty-mask policy, distances in mm."""

from __future__ import annotations

import math

import numpy as np
import torch
import pytest

from study.metrics import score_images


def square(n: int = 3, *, size: int = 32, at: tuple[int, int] = (8, 8), side: int = 10) -> np.ndarray:
    out = np.zeros((n, 1, size, size), dtype=np.uint8)
    y, x = at
    out[:, :, y : y + side, x : x + side] = 1
    return out


def test_perfect_prediction():
    rows = score_images(square(1), square(1), spacing=(1.0, 1.0), nsd_tolerance=1.0)
    assert rows == [
        {"empty_gt": False, "empty_pred": False, "missed": False, "dice": 1.0, "hd95": 0.0, "nsd": 1.0, "assd": 0.0}
    ]


def test_missed_structure_is_worst_case_not_nan():
    gt = square(2)
    pred = gt.copy()
    pred[1] = 0  # image 1: the model missed the structure entirely
    rows = score_images(pred, gt, spacing=(0.5, 2.0), nsd_tolerance=1.0)
    diagonal = math.hypot(32 * 0.5, 32 * 2.0)
    assert rows[1]["missed"] and rows[1]["empty_pred"] and not rows[1]["empty_gt"]
    assert rows[1]["dice"] == 0.0 and rows[1]["nsd"] == 0.0
    assert rows[1]["hd95"] == pytest.approx(diagonal) and rows[1]["assd"] == pytest.approx(diagonal)
    assert not rows[0]["missed"] and rows[0]["dice"] == 1.0


def test_hallucination_and_both_empty():
    gt = np.zeros((2, 1, 16, 16), dtype=np.uint8)
    pred = gt.copy()
    pred[0, :, 2:5, 2:5] = 1
    rows = score_images(pred, gt, spacing=(1.0, 1.0), nsd_tolerance=1.0)
    assert rows[0]["empty_gt"] and not rows[0]["missed"]
    assert (rows[0]["dice"], rows[0]["nsd"]) == (0.0, 0.0) and rows[0]["hd95"] == pytest.approx(math.hypot(16, 16))
    assert (rows[1]["dice"], rows[1]["hd95"], rows[1]["nsd"]) == (1.0, 0.0, 1.0)


def test_distances_scale_with_spacing_and_nsd_with_tolerance():
    gt = square(1)
    pred = square(1, at=(11, 8))  # shifted 3 pixels along the first axis
    one = score_images(pred, gt, spacing=(1.0, 1.0), nsd_tolerance=1.0)[0]
    two = score_images(pred, gt, spacing=(2.0, 2.0), nsd_tolerance=1.0)[0]
    assert one["dice"] == pytest.approx(2 * 70 / 200)
    assert one["hd95"] == pytest.approx(3.0) and two["hd95"] == pytest.approx(6.0)
    assert 0.0 < one["assd"] < one["hd95"] and two["assd"] == pytest.approx(2 * one["assd"])
    loose = score_images(pred, gt, spacing=(1.0, 1.0), nsd_tolerance=3.0)[0]
    assert one["nsd"] < loose["nsd"] == pytest.approx(1.0)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="prediction shape"):
        score_images(square(1), square(2), spacing=(1.0, 1.0), nsd_tolerance=1.0)


def test_the_metric_registry_keeps_the_mlflow_names():
    """MLflow names and per_image.csv columns derive from the registry; they must not move."""
    from study import metrics_names as M
    from study.metrics import METRICS

    assert tuple(METRICS) == M.SCORES
    assert [m.test_key for m in METRICS.values()] == ["test_dice", "test_hd95", "test_nsd", "test_assd"]
    assert M.TEST_METRICS == ("test_dice", "test_hd95", "test_nsd", "test_assd", "test_td", "test_missed")
    assert METRICS["dice"].condition_key("gaussian_noise", 3) == "test_dice/gaussian_noise/3"
    assert M.PER_IMAGE_COLUMNS == (
        "image_id", "condition", "dice", "hd95", "nsd", "assd", "td", "empty_gt", "empty_pred", "missed", "fbr",
    )


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_shared_surface_distances_give_monais_own_metrics(spatial_dims):
    """One edge and distance computation per image feeds HD95, ASSD and surface Dice: the values must
    be MONAI's compute_hausdorff_distance, compute_average_surface_distance and compute_surface_dice."""
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance, compute_surface_dice

    rng = np.random.default_rng(spatial_dims)
    shape = (4, 1, *([24] * spatial_dims))
    grid = np.indices(shape[2:]).astype(float)
    blobs = []
    for _ in range(2 * shape[0]):  # irregular blobs: a ball with a random bumpy radius
        centre = rng.uniform(8, 16, spatial_dims).reshape(-1, *([1] * spatial_dims))
        radius = rng.uniform(4, 7) + rng.normal(0, 0.8, shape[2:])
        blobs.append((np.sqrt(((grid - centre) ** 2).sum(0)) < radius))
    pred = np.stack(blobs[: shape[0]])[:, None].astype(float)
    gt = np.stack(blobs[shape[0]:])[:, None].astype(float)
    spacing = [0.8, 1.3, 1.0][:spatial_dims]
    rows = score_images(pred, gt, spacing=spacing, nsd_tolerance=1.5)
    p, g = torch.as_tensor(pred), torch.as_tensor(gt)
    hd = compute_hausdorff_distance(p, g, include_background=True, percentile=95, spacing=spacing)[:, 0]
    assd = compute_average_surface_distance(p, g, include_background=True, symmetric=True, spacing=spacing)[:, 0]
    nsd = compute_surface_dice(p, g, class_thresholds=[1.5], include_background=True, spacing=spacing)[:, 0]
    assert [r["hd95"] for r in rows] == pytest.approx(hd.tolist(), rel=1e-6)
    assert [r["assd"] for r in rows] == pytest.approx(assd.tolist(), rel=1e-6)
    assert [r["nsd"] for r in rows] == pytest.approx(nsd.tolist(), rel=1e-6)
