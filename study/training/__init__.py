"""Plain training and evaluation functions: no Ray, no MLflow, callable from a loop or a trial.

The trial itself is at the top (`trial`, `plan`, `loop`, `checkpoints`); below it, by job: what
the network is fed (`inputs`), how the trained model is judged (`evaluation`), and what a GPU
changes (`device`).
"""

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
