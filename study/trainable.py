"""The one trainable every cell runs: build the cell's network, train, validate, test.

Ray Tune calls `train_trial(config, spec=..., data=...)`; `spec` and `data` arrive once through
`tune.with_parameters` (the object store), the config carries only cell, seed and phase.
"""

from __future__ import annotations

import copy
import json
import math
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
    """Tune entry point: one cell x seed, reported epoch by epoch, then evaluated on the test split."""
    plan = TrialPlan.from_config(spec, config)
    metrics, per_image, model_state = run_plan(plan, spec=spec, data=data, on_epoch=report_epoch)

    def write(directory: Path) -> None:
        per_image.to_csv(directory / M.PER_IMAGE_FILE, index=False)
        torch.save(model_state, directory / "model.pt")
        (directory / "architecture.json").write_text(json.dumps(plan.arch.model_dump(mode="json"), indent=2))

    report_final(metrics, write)


def run_plan(plan: TrialPlan, *, spec: StudySpec, data: StudyData, on_epoch: Any = None):
    """Train and test one plan; Tune-free so a plain loop (or a benchmark) can call it.

    Returns:
        (final metrics, per-image test frame, state dict of the weights that were tested)
    """
    torch.set_num_threads(max(1, int(spec.resources.cpu)))
    torch.manual_seed(plan.seed)
    device = torch.device("cuda" if spec.resources.gpu > 0 and torch.cuda.is_available() else "cpu")
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
            on_epoch({M.EPOCH: epoch, M.TRAIN_LOSS: loss, M.VAL_DICE: val})
    if spec.training.test_weights == "best" and best_state is not None:
        model.load_state_dict(best_state)
    per_image = evaluate_split(
        model,
        level.test,
        threshold=spec.evaluation.threshold,
        nsd_tolerance=spec.evaluation.nsd_tolerance,
        batch_size=batch,
        device=device,
    )
    return summarise_test(per_image, best_val=best_dice), per_image, model.state_dict()


def summarise_test(per_image: pd.DataFrame, *, best_val: float) -> dict[str, float]:
    """Final trial metrics: means over test images (every image counted, see EmptyPolicy)."""
    return {
        M.TEST_DICE: float(per_image["dice"].mean()),
        M.TEST_HD95: float(per_image["hd95"].mean()),
        M.TEST_NSD: float(per_image["nsd"].mean()),
        M.TEST_TD: float(np.nanmean(per_image["td"])) if per_image["td"].notna().any() else float("nan"),
        M.TEST_MISSED: float(per_image["missed"].sum()),
        "best_val_dice": best_val,
    }
