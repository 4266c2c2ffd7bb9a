"""Plain training and evaluation functions: no Ray, no MLflow, callable from a loop or a trial."""

from __future__ import annotations

from study.training.inputs.strategies import Patches, WholeImages
from study.training.loop import build_loss, build_optimizer, build_schedule, train_one_epoch
from study.training.evaluation.evaluate import dice_of, evaluate_split
from study.training.plan import TrialPlan

__all__ = [
    "Patches",
    "TrialPlan",
    "WholeImages",
    "build_loss",
    "build_optimizer",
    "build_schedule",
    "dice_of",
    "evaluate_split",
    "train_one_epoch",
]
