"""The learning gate on real networks' predictions: a collapsed model is caught, a healthy one passes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from study.data import Synthetic3DConfig, build_synthetic3d
from study.spec import LearningGate
from study.training import Patches, dice_of
from study.training.evaluation.learning import collapsed_share, judge, trivial_dice

CFG = Synthetic3DConfig(volume_size=32, n_train=2, n_val=3, n_calib=1, n_test=6, train_radius=(5, 7), test_radius=(3, 9))


@pytest.fixture(scope="module")
def level():
    return build_synthetic3d(CFG)


class Constant(nn.Module):
    """A collapsed network: the same logit everywhere, whatever the input."""

    def __init__(self, logit: float) -> None:
        super().__init__()
        self.logit = logit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x, self.logit)


class Threshold(nn.Module):
    """A healthy network for this data: smooth the intensity, then threshold between the means (0.3, 0.7)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (nn.functional.avg_pool3d(x, 3, stride=1, padding=1) - 0.5) * 40


def _predict(model: nn.Module, split) -> list[np.ndarray]:
    inputs = Patches(batch_size=1, patch_size=16, pos_fraction=0.5, samples_per_volume=1, sw_batch_size=4, overlap=0.25)
    return inputs.predict(model, split, device=torch.device("cpu"))


def _verdict(level, model: nn.Module, curve: list[float] | None = None):
    probs = _predict(model, level.test)
    test_dice = dice_of(probs, level.test, threshold=0.5)
    val_dice = dice_of(_predict(model, level.val), level.val, threshold=0.5)
    return judge(
        LearningGate(), test_probs=probs, threshold=0.5, test_dice=test_dice,
        val_curve=curve if curve is not None else [0.1, val_dice], trivial_val_dice=trivial_dice(level.val),
    ), test_dice


def test_all_foreground_model_is_collapsed(level):
    verdict, dice = _verdict(level, Constant(10.0))
    assert dice == pytest.approx(trivial_dice(level.test), abs=1e-6)  # the Dice of a collapse, about 2 x FBR
    assert not verdict.learned and verdict.reason.startswith("collapsed: 6 of 6 test predictions")


def test_all_background_model_is_collapsed(level):
    verdict, dice = _verdict(level, Constant(-10.0))
    assert dice == 0.0 and not verdict.learned and verdict.reason.startswith("collapsed")


def test_healthy_model_learned(level):
    verdict, dice = _verdict(level, Threshold())
    assert dice > 0.6  # far above the all-foreground Dice (about 0.1 here)
    assert verdict.learned and verdict.reason == ""


def test_flat_validation_curve_never_rose(level):
    """Sound test predictions, but validation never left the all-foreground Dice: not learned."""
    trivial = trivial_dice(level.val)
    verdict, _ = _verdict(level, Threshold(), curve=[trivial, trivial + 0.01, trivial])
    assert not verdict.learned and verdict.reason.startswith("never_rose: best validation Dice")


def test_dice_floor_from_the_spec(level):
    probs = _predict(Threshold(), level.test)
    kwargs = dict(test_probs=probs, threshold=0.5, val_curve=[0.2, 0.9], trivial_val_dice=0.07)
    assert judge(LearningGate(min_dice=0.5), test_dice=0.45, **kwargs).reason == (
        "below_floor: test Dice 0.450, best validation Dice 0.900 < 0.5"
    )
    assert judge(LearningGate(min_dice=0.4), test_dice=0.45, **kwargs).learned


def test_one_mask_for_every_image_is_a_collapse():
    blob = np.zeros((1, 16, 16), np.float32)
    blob[0, 4:10, 4:10] = 1.0
    others = [np.random.default_rng(i).random((1, 16, 16)) for i in range(2)]
    assert collapsed_share([blob] * 4 + others, threshold=0.5) == pytest.approx(4 / 6)
    assert collapsed_share([blob] + others, threshold=0.5) == 0.0  # one image is its own mask


def test_an_empty_prediction_of_an_empty_image_is_right_not_collapsed():
    empty = np.zeros((1, 16, 16), np.float32)
    blob = np.zeros((1, 16, 16), np.float32)
    blob[0, 4:10, 4:10] = 1.0
    # Three empty slices predicted empty, one object found: nothing degenerate.
    assert collapsed_share([empty, empty, empty, blob], threshold=0.5, truths=[empty, empty, empty, blob]) == 0.0
    # The same predictions where every slice has the object: three misses.
    assert collapsed_share([empty, empty, empty, blob], threshold=0.5, truths=[blob] * 4) == pytest.approx(3 / 4)
    # One mask for two images whose truths differ is a collapse; for two identical truths it is right.
    other = np.roll(blob, 3, axis=2)
    assert collapsed_share([blob, blob], threshold=0.5, truths=[blob, other]) == 1.0
    assert collapsed_share([blob, blob], threshold=0.5, truths=[blob, blob]) == 0.0
