"""The learning gate: did a trained model learn anything, before its numbers are compared?

A model stuck at a trivial answer (every pixel foreground, every pixel background, one mask for
every image) still produces a Dice, a p-value and a ranking; none of them mean anything. Every
confirm trial is judged here on its clean test predictions and its validation curve, and the
verdict travels with the run (MLflow tags) into every command that compares arms.

Reasons, checked in this order (the first that holds is reported):
    collapsed: on more than `max_collapsed` of the test images the prediction is empty, covers
        (nearly) the whole image, or is the very same mask as on most other images;
    never_rose: the best validation Dice did not rise `min_gain` above the trivial answer, the
        best prediction that ignores the image (`blind_baseline`): every pixel foreground (about
        2 x FBR), or one fixed mask where the objects sit in predictable places (the training
        masks' frequency, thresholded: 0.68 Dice for the reference study's centred blobs), i.e.
        the validation curve never left the regime a model reaches without looking at the image;
    below_floor: the test Dice or the best validation Dice is under `min_dice`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from study.data import Split
from study.spec import LearningGate

_FULL = 0.98  # a prediction covering at least this share of the image counts as "all foreground"


@dataclass(frozen=True)
class Verdict:
    """Whether a trial's model learned; `reason` is empty when it did."""

    learned: bool
    reason: str = ""


@dataclass(frozen=True)
class Baseline:
    """The Dice a model reaches without looking at the image, and which prediction that is."""

    dice: float
    what: str


def trivial_dice(split: Split) -> float:
    """Mean Dice of predicting every pixel as foreground on `split` (2 fg / (fg + all) per image)."""
    scores = []
    for i in range(len(split)):
        mask = split.volume(i)[1] > 0
        scores.append(2.0 * mask.sum() / (mask.sum() + mask.size))
    return float(np.mean(scores))


def blind_baseline(train: Split, val: Split) -> Baseline:
    """The best of two predictions that ignore the image, scored on `val`: every pixel foreground,
    and one fixed mask, the pixels where the training masks are foreground more often than a
    threshold (the threshold that scores best on the training masks themselves, so `val` only
    scores it). The fixed mask needs every mask of both splits in one shape; otherwise only the
    all-foreground answer counts."""
    everything = Baseline(trivial_dice(val), "the all-foreground Dice")
    shapes = {np.shape(train.volume(i)[1]) for i in range(len(train))} | {np.shape(val.volume(i)[1]) for i in range(len(val))}
    if len(shapes) != 1 or len(train) == 0:
        return everything
    train_masks = np.stack([train.volume(i)[1] > 0 for i in range(len(train))])
    frequency = train_masks.mean(axis=0)
    threshold = max(_LEVELS, key=lambda t: _mean_dice(frequency > t, train_masks))
    fixed = frequency > threshold
    score = _mean_dice(fixed, np.stack([val.volume(i)[1] > 0 for i in range(len(val))]))
    if score <= everything.dice:
        return everything
    return Baseline(score, f"the Dice of one fixed mask that ignores the image (where {threshold:.2f} of the training masks are foreground)")


_LEVELS = tuple(np.round(np.arange(0.05, 1.0, 0.05), 2))


def _mean_dice(pred: np.ndarray, truths: np.ndarray) -> float:
    inter = (truths & pred).reshape(len(truths), -1).sum(axis=1)
    sizes = truths.reshape(len(truths), -1).sum(axis=1) + pred.sum()
    return float(np.mean(np.where(sizes > 0, 2.0 * inter / np.maximum(sizes, 1), 1.0)))


def collapsed_share(
    probs: Sequence[np.ndarray], *, threshold: float, truths: Sequence[np.ndarray] | None = None
) -> float:
    """Share of images whose binary prediction is empty, (nearly) full, or one mask repeated.

    With `truths`, a prediction is only degenerate where the truth is not: an empty prediction
    of an empty slice is right. A mask repeated across images counts when those images' truths differ.
    """
    if not probs:
        return 0.0
    degenerate = 0
    groups: dict[tuple, set[bytes]] = {}  # predicted mask -> the truths it was predicted for
    for i, p in enumerate(probs):
        pred = np.asarray(p) > threshold
        truth = None if truths is None else np.asarray(truths[i]).reshape(pred.shape) > 0
        share = float(pred.mean())
        if share == 0.0 and (truth is None or truth.any()):
            degenerate += 1
        elif share >= _FULL and (truth is None or truth.mean() < _FULL):
            degenerate += 1
        else:
            key = (pred.shape, _digest(pred))
            groups.setdefault(key, set()).add(_digest(truth) if truth is not None else str(i).encode())
    # One mask predicted for images with different truths is a collapse; an image is its own mask.
    same = max((len(t) for t in groups.values() if len(t) > 1), default=0)
    return (degenerate + same) / len(probs)


def _digest(mask: np.ndarray) -> bytes:
    return hashlib.blake2b(np.packbits(mask).tobytes(), digest_size=16).digest()


def judge(
    gate: LearningGate,
    *,
    test_probs: Sequence[np.ndarray],
    threshold: float,
    test_dice: float,
    val_curve: Sequence[float],
    trivial_val_dice: float | Baseline,
    test_truths: Sequence[np.ndarray] | None = None,
) -> Verdict:
    """The verdict on one trained model (see the module docstring for the reasons).

    Example:
        >>> from study.spec import LearningGate
        >>> judge(LearningGate(), test_probs=[np.ones((8, 8))] * 4, threshold=0.5, test_dice=0.1,
        ...       val_curve=[0.1, 0.1], trivial_val_dice=0.1).reason
        'collapsed: 4 of 4 test predictions are empty, all foreground or one repeated mask'
    """
    share = collapsed_share(test_probs, threshold=threshold, truths=test_truths)
    if share > gate.max_collapsed:
        n = round(share * len(test_probs))
        return Verdict(False, f"collapsed: {n} of {len(test_probs)} test predictions are empty, all foreground or one repeated mask")
    best_val = max(val_curve, default=float("nan"))
    blind = trivial_val_dice if isinstance(trivial_val_dice, Baseline) else Baseline(trivial_val_dice, "the all-foreground Dice")
    if not best_val >= blind.dice + gate.min_gain:
        return Verdict(
            False,
            f"never_rose: best validation Dice {best_val:.3f} never rose {gate.min_gain} above {blind.what} {blind.dice:.3f}",
        )
    if not (test_dice >= gate.min_dice and best_val >= gate.min_dice):
        return Verdict(False, f"below_floor: test Dice {test_dice:.3f}, best validation Dice {best_val:.3f} < {gate.min_dice}")
    return Verdict(True)
