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


def test_the_trivial_answer_is_the_best_prediction_that_ignores_the_image():
    """Blobs in the middle of every image: one fixed mask (where most training masks are foreground)
    scores far above the all-foreground Dice, and a model that does no better never learned the
    task; moved anywhere, the fixed mask is no better than all foreground."""
    from study.data.synthetic2d import Synthetic2DConfig, build_synthetic2d
    from study.training.evaluation.learning import blind_baseline

    centred = build_synthetic2d(Synthetic2DConfig(image_size=32, n_images=60, seed=1), alpha=0.5)
    blind = blind_baseline(centred.train, centred.val)
    assert blind.dice > trivial_dice(centred.val) + 0.3 and blind.what.startswith("the Dice of one fixed mask")
    probs = [np.random.default_rng(i).random((1, 32, 32)) for i in range(len(centred.test))]  # not collapsed
    verdict = judge(LearningGate(min_dice=0.3), test_probs=probs, threshold=0.5, test_dice=0.6,
                    val_curve=[0.2, blind.dice + 0.02], trivial_val_dice=blind)
    assert not verdict.learned and verdict.reason.startswith(
        f"never_rose: best validation Dice {blind.dice + 0.02:.3f} never rose 0.05 above the Dice of one fixed mask")
    anywhere = build_synthetic2d(Synthetic2DConfig(image_size=32, n_images=60, seed=1, placement="anywhere"), alpha=0.5)
    moved = blind_baseline(anywhere.train, anywhere.val)
    assert moved.dice < blind.dice - 0.2
    # Masks of several shapes (3D volumes of two sizes) have no fixed mask: all foreground is the answer.
    level = build_synthetic3d(Synthetic3DConfig(volume_size=32, test_volume_sizes=[32, 48], n_train=2, n_val=2, n_calib=1,
                                                n_test=2, train_radius=(5, 7), test_radius=(3, 9)))
    assert blind_baseline(level.train, level.test).what == "the all-foreground Dice"
