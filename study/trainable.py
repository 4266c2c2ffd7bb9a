"""The one trainable every cell runs: build the cell's network, train, validate, test.

Ray Tune calls `train_trial(config, spec=..., data=...)`; `spec` and `data` arrive once through
`tune.with_parameters` (the object store), the config carries only cell, seed and phase.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from study import metrics_names as M
from study.models import build_network
from study.spec import StudySpec
from study.study_data import StudyData
from study.training import TrialPlan, build_loss, build_optimizer, dice_of, evaluate_split, train_one_epoch
from study.training.loop import predict_probabilities
from study.tune_report import report_epoch, report_final


class LossDivergedError(RuntimeError):
    """The training loss became NaN or infinite."""


def train_trial(config: dict[str, Any], *, spec: StudySpec, data: StudyData) -> None:
    """Tune entry point: one trial, reported epoch by epoch; confirm trials are then tested."""
    plan = TrialPlan.from_config(spec, config)
    if plan.phase == M.PHASE_TUNE:
        train_plan(plan, spec=spec, data=data, on_epoch=report_epoch)  # validation only
        return
    metrics, per_image, model_state = run_plan(plan, spec=spec, data=data, on_epoch=report_epoch)
    metrics[M.EPOCH] = spec.training.epochs  # the final result ran the full schedule

    def write(directory: Path) -> None:
        per_image.to_csv(directory / M.PER_IMAGE_FILE, index=False)
        torch.save(model_state, directory / "model.pt")
        (directory / "architecture.json").write_text(json.dumps(plan.arch.model_dump(mode="json"), indent=2))

    report_final(metrics, write)


def train_plan(
    plan: TrialPlan, *, spec: StudySpec, data: StudyData, on_epoch: Callable[[dict[str, float]], None] | None = None
) -> tuple[torch.nn.Module, float]:
    """Train one plan for spec.training.epochs, validating each epoch.

    Returns:
        (model holding the weights the spec says to test, best validation Dice)

    Raises:
        LossDivergedError: the loss became NaN or infinite.
    """
    torch.set_num_threads(max(1, int(spec.resources.cpu)))
    torch.manual_seed(plan.seed)
    device = _device(spec)
    level = data[plan.data_key]
    spatial = level.train.images.shape[2:]
    model = build_network(
        plan.arch,
        spatial_dims=len(spatial),
        in_channels=level.train.images.shape[1],
        out_channels=1,
        img_size=spatial,
    ).to(device)
    optimizer = build_optimizer(model, plan.hparams)
    loss_fn = build_loss(spec.training)
    rng = np.random.default_rng([plan.seed, 7919])
    batch = plan.hparams.batch_size
    best_dice, best_state = -1.0, None
    for epoch in range(1, spec.training.epochs + 1):
        loss = train_one_epoch(
            model, optimizer, loss_fn, level.train.images, level.train.masks, batch_size=batch, rng=rng, device=device
        )
        if not math.isfinite(loss):
            raise LossDivergedError(f"loss diverged at epoch {epoch}")
        probs = predict_probabilities(model, level.val.images, batch_size=batch, device=device)
        val = dice_of(probs > spec.evaluation.threshold, level.val.masks)
        if val > best_dice:
            best_dice, best_state = val, copy.deepcopy(model.state_dict())
        if on_epoch is not None:
            on_epoch({M.EPOCH: epoch, M.TRAIN_LOSS: loss, M.VAL_DICE: val, M.BEST_VAL_DICE: best_dice})
    if spec.training.test_weights == "best" and best_state is not None:
        model.load_state_dict(best_state)
    return model, best_dice


def run_plan(
    plan: TrialPlan, *, spec: StudySpec, data: StudyData, on_epoch: Callable[[dict[str, float]], None] | None = None
) -> tuple[dict[str, float], pd.DataFrame, dict[str, Any]]:
    """Train and test one plan; Tune-free so a plain loop (or a benchmark) can call it.

    Returns:
        (final metrics, per-image test frame, state dict of the weights that were tested)
    """
    model, best_dice = train_plan(plan, spec=spec, data=data, on_epoch=on_epoch)
    per_image = evaluate_split(
        model,
        data[plan.data_key].test,
        threshold=spec.evaluation.threshold,
        nsd_tolerance=spec.evaluation.nsd_tolerance,
        batch_size=plan.hparams.batch_size,
        device=_device(spec),
    )
    return summarise_test(per_image, best_val=best_dice), per_image, model.state_dict()


def _device(spec: StudySpec) -> torch.device:
    return torch.device("cuda" if spec.resources.gpu > 0 and torch.cuda.is_available() else "cpu")


def summarise_test(per_image: pd.DataFrame, *, best_val: float) -> dict[str, float]:
    """Final trial metrics: means over test images (every image counted, see EmptyPolicy)."""
    return {
        M.TEST_DICE: float(per_image["dice"].mean()),
        M.TEST_HD95: float(per_image["hd95"].mean()),
        M.TEST_NSD: float(per_image["nsd"].mean()),
        M.TEST_TD: float(np.nanmean(per_image["td"])) if per_image["td"].notna().any() else float("nan"),
        M.TEST_MISSED: float(per_image["missed"].sum()),
        M.BEST_VAL_DICE: best_val,
    }
