"""One training step and one prediction per distinct network input of a study, before Ray starts.

A deterministic failure (a network that does not accept the data's channels or sizes, a loss that
cannot take the masks, a patch the volumes cannot give) would otherwise fail every trial of its
cells on the cluster, after the study folder and its MLflow runs exist, and be retried. Running
the real code path once per (architecture, input size, data level) on the real data turns it into
one line at `segstudy validate` and before `segstudy run` starts anything.
"""

from __future__ import annotations

import numpy as np
import torch

from study.spec.cells import cell_key, expand_cells
from study.data import Split
from study.errors import SegstudyError, first_line
from study.models import build_network
from study.spec import ARCHITECTURE, StudySpec
from study.training.study_data import StudyData
from study.training.trial import input_strategy, network_input
from study.training import TrialPlan, build_loss

_ERRORS = (RuntimeError, ValueError, TypeError, IndexError, KeyError, AssertionError, NotImplementedError)


def preflight(spec: StudySpec, data: StudyData) -> int:
    """Train one step and predict one validation image for each distinct input of the study.

    Returns:
        How many distinct (architecture, patch size, data level) combinations were checked.

    Raises:
        SegstudyError: naming the first cell whose step fails, with the error's first line.
    """
    checked: set[tuple] = set()
    for cell in expand_cells(spec):
        plan = TrialPlan.from_config(spec, TrialPlan.config(cell, seed=0, phase="confirm"))
        key = (str(cell[ARCHITECTURE]), plan.patch_size, plan.data_key)
        if key in checked:
            continue
        checked.add(key)
        try:
            _one_step(plan, spec, data)
        except _ERRORS as exc:
            first = first_line(exc, limit=300, empty="")
            raise SegstudyError(
                f"factors: cell {cell_key(cell)}: one training step on the study's data fails, so every trial of "
                f"it would: {type(exc).__name__}: {first}"
            ) from None
    return len(checked)


def _one_step(plan: TrialPlan, spec: StudySpec, data: StudyData) -> None:
    torch.manual_seed(0)
    level = data[plan.data_key]
    spatial_dims, in_channels, img_size = network_input(plan, level)
    model = build_network(plan.arch, spatial_dims=spatial_dims, in_channels=in_channels, out_channels=1, img_size=img_size)
    inputs = input_strategy(plan, spec)
    images, masks = next(iter(inputs.batches(_first(level.train, plan.hparams.batch_size), np.random.default_rng(0))))
    model.train()
    loss = build_loss(spec.training)(model(torch.tensor(images)), torch.tensor(masks, dtype=torch.float32))
    loss.backward()
    inputs.predict(model, _first(level.val, 1), device=torch.device("cpu"))


def _first(split: Split, n: int) -> Split:
    """The first `n` items of a split (a cheap stand-in with the same shapes and layout)."""
    keep = min(n, len(split))
    images = split.images[:keep] if split.stacked else tuple(split.images[:keep])
    masks = split.masks[:keep] if split.stacked else tuple(split.masks[:keep])
    return Split(images, masks, split.ids[:keep], split.td[:keep], split.spacing)


__all__ = ["preflight"]
