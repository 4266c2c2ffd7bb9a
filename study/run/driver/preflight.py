"""One training step and one prediction per distinct network input of a study, before Ray starts.

A deterministic failure (a network that does not accept the data's channels or sizes, a loss that
cannot take the masks, a patch the volumes cannot give) would otherwise fail every trial of its
cells on the cluster, after the study folder and its MLflow runs exist, and be retried. Running
the real code path once per (architecture, input size, data level) on the real data turns it into
one line at `segstudy validate` and before `segstudy run` starts anything. Within each, every
distinct image layout (channels and the shape the network sees) of every split is trained on and
predicted once, so a case unlike the first cannot fail a trial later.

The steps are timed (after one warm-up step), which gives the estimate of the study's duration
that `validate` and `run` print (`estimate_line`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from study import process_state
from study.data import LevelData, Split
from study.errors import SegstudyError, first_line
from study.models import build_network, output_problem
from study.perturbations import condition_seed, get_perturbation
from study.run.display.console import duration
from study.spec import ARCHITECTURE, StudySpec, count_trials
from study.spec.cells import cell_key, expand_cells
from study.training import TrialPlan, build_loss
from study.training.evaluation.evaluate import evaluate_split
from study.training.inputs.study_data import StudyData, data_key
from study.training.trial import input_strategy, network_input
from study.training.reuse import restores

_ERRORS = (RuntimeError, ValueError, TypeError, IndexError, KeyError, AssertionError, NotImplementedError)

# (architecture, its network arguments' levels, patch size or None, data level)
InputKey = tuple[str, tuple[Any, ...], int | None, tuple[Any, ...]]


@dataclass(frozen=True)
class Timing:
    """Seconds one training step (at the trial's batch size), one image's prediction and one
    image's scoring (every test metric) took, and the bytes of the network's weights (what a
    confirm trial's checkpoint and model hold: `study.run.driver.space`)."""

    step_s: float
    predict_s: float
    score_s: float
    state_bytes: int = 0


@dataclass(frozen=True)
class Preflight:
    """What the preflight checked, and how long each network input's step took."""

    timings: dict[InputKey, Timing]
    layouts: int  # distinct image layouts trained on and predicted, over all inputs

    @property
    def checked(self) -> int:
        """How many distinct (architecture, its argument levels, patch size, data level) combinations were checked."""
        return len(self.timings)


def input_key(spec: StudySpec, cell: dict[str, Any]) -> InputKey:
    """The part of a cell that decides what its network sees (the same as `TrialPlan`'s)."""
    patch = int(cell.get("patch_size", spec.patch_defaults.size)) if spec.patch_mode else None
    return str(cell[ARCHITECTURE]), tuple(cell[f] for f in spec.network_factors), patch, data_key(spec, cell)


def preflight(spec: StudySpec, data: StudyData) -> Preflight:
    """Train one step and predict one validation image for each distinct input of the study, then
    one step and one prediction on each further image layout its splits hold.

    Raises:
        SegstudyError: naming the first cell whose step fails (and the image, for a layout other
            than the first), with the error's first line.
    """
    timings: dict[InputKey, Timing] = {}
    layouts = 0
    for cell in expand_cells(spec):
        key = input_key(spec, cell)
        if key in timings:
            continue
        plan = TrialPlan.from_config(spec, TrialPlan.config(cell, seed=0, phase="confirm"))
        where = f"factors: cell {cell_key(cell)}: one training step on the study's data fails"
        try:
            timings[key], n = _steps(plan, spec, data[plan.data_key], where=where)
        except _ERRORS as exc:
            raise SegstudyError(f"{where}, so every trial of it would: {type(exc).__name__}: {first_line(exc, limit=300, empty='')}") from None
        layouts += n
    _apply_own_perturbations(spec, data)
    return Preflight(timings=timings, layouts=layouts)


def _apply_own_perturbations(spec: StudySpec, data: StudyData) -> None:
    """Apply each of the spec's own perturbations (by import path) at every evaluated severity to
    one test image, as the confirm trials will: a transform that fails or changes the image's
    shape is one line naming its spec key here, not a failure of every trial after training.

    Raises:
        SegstudyError: ``perturbations.<name>.severities.<s>: ...``.
    """
    names = [n for n in spec.evaluation.perturbations if n in spec.perturbations]
    for level in data.values():
        image, mask = level.test.volume(0)
        for name in names:
            perturbation = get_perturbation(name, custom=spec.perturbations)
            for severity in spec.evaluation.severities:
                seed = condition_seed(spec.evaluation.perturbation_seed, level.test.ids[0], name, severity)
                perturbation.apply(image, severity=severity, seed=seed, mask=mask)


def _steps(plan: TrialPlan, spec: StudySpec, level: LevelData, *, where: str) -> tuple[Timing, int]:
    threads = torch.get_num_threads()
    process_state.set_torch_threads(spec.resources.cpu)  # timed as a trial runs: with its CPUs' threads
    try:
        return _steps_on(plan, spec, level, where=where)
    finally:
        torch.set_num_threads(threads)


def _steps_on(plan: TrialPlan, spec: StudySpec, level: LevelData, *, where: str) -> tuple[Timing, int]:
    torch.manual_seed(0)
    spatial_dims, in_channels, img_size = network_input(plan, level)
    model = build_network(plan.arch, spatial_dims=spatial_dims, in_channels=in_channels, out_channels=1, img_size=img_size)
    inputs = input_strategy(plan, spec)
    loss_fn = build_loss(spec.training)
    rng = np.random.default_rng(0)

    def step(batch: tuple[Any, Any]) -> float:
        model.train()
        t0 = time.perf_counter()
        images = torch.tensor(batch[0])
        out = model(images)
        problem = output_problem(model, out, images.shape, out_channels=1)
        if problem:  # a network of the user's (a _target_ arm): say so before the loss fails obscurely
            raise SegstudyError(f"{_arm_key(plan, spec)}: {problem}; in cell {plan.cell_key}")
        loss_fn(out, torch.tensor(batch[1], dtype=torch.float32)).backward()
        return time.perf_counter() - t0

    def predict(split: Split) -> float:
        t0 = time.perf_counter()
        inputs.predict(model, split, device=torch.device("cpu"))
        return time.perf_counter() - t0

    def score(split: Split, probs: list[np.ndarray]) -> float:
        t0 = time.perf_counter()
        evaluate_split(probs, split, threshold=spec.evaluation.threshold, nsd_tolerance=spec.evaluation.nsd_tolerance)
        return time.perf_counter() - t0

    first = next(iter(inputs.batches(_subset(level.train, range(min(len(level.train), plan.hparams.batch_size))), rng)))
    first_val = _subset(level.val, [0])
    step(first)  # warm-up (and the check itself): the first call pays for lazy initialisation
    probs = inputs.predict(model, first_val, device=torch.device("cpu"))
    score(first_val, probs)
    timing = Timing(
        step_s=_fastest(lambda: step(first)),
        predict_s=_fastest(lambda: predict(first_val)),
        score_s=_fastest(lambda: score(first_val, probs)),
        state_bytes=sum(t.numel() * t.element_size() for t in model.state_dict().values()),
    )
    layout = _layout_of(plan.patch_size)
    done = {layout(level.train.volume(0)[0])}
    train_reps = _first_of_each(level.train, layout)
    if len(train_reps) > 1 and plan.hparams.batch_size > 1:  # cases of several layouts batched together, as a trial would
        for batch in inputs.batches(_subset(level.train, train_reps), rng):
            step(batch)
    # The test splits of other levels (evaluation.shift) too: a site whose images differ in
    # channels or size would fail every trial after training.
    shifted = [(f"shift {s.factor}={s.level} test", s.split) for s in level.shifted]
    for name, split in [*level.named_splits(), *shifted]:
        for i in _first_of_each(split, layout):
            image = split.volume(i)[0]
            if layout(image) in done:
                continue
            done.add(layout(image))
            try:
                step(next(iter(inputs.batches(_subset(split, [i]), rng))))
                predict(_subset(split, [i]))
            except _ERRORS as exc:
                raise SegstudyError(
                    f"{where} on {name} image {split.ids[i]} ({image.shape[0]} channel(s), shape {list(image.shape[1:])}), "
                    f"so every trial would: {type(exc).__name__}: {first_line(exc, limit=300, empty='')}"
                ) from None
    return timing, len(done)


def _arm_key(plan: TrialPlan, spec: StudySpec) -> str:
    """The spec key of a cell's arm: its architectures entry, else its place in factors.architecture."""
    name = str(plan.cell[ARCHITECTURE])
    if name in spec.architectures:
        return f"architectures.{name}"
    return f"factors.architecture[{spec.factors[ARCHITECTURE].index(plan.cell[ARCHITECTURE])}]: '{name}'"


def _fastest(timed: Callable[[], float], *, budget_s: float = 0.3, most: int = 3) -> float:
    """The shortest of a few timings (at most `most`, fewer once `budget_s` is spent): other work
    on the machine only ever makes one longer."""
    times = [timed()]
    while len(times) < most and sum(times) < budget_s:
        times.append(timed())
    return min(times)


def _layout_of(patch_size: int | None) -> Callable[[np.ndarray], tuple[int, ...]]:
    """What decides whether an image fits the network: its channels and the spatial shape the
    network sees (the whole image, or in patch mode each side up to the patch)."""
    if patch_size is None:
        return lambda image: tuple(image.shape)
    return lambda image: (image.shape[0], *(min(int(s), patch_size) for s in image.shape[1:]))


def _first_of_each(split: Split, layout: Callable[[np.ndarray], tuple[int, ...]]) -> list[int]:
    """The first index of each distinct layout in `split` (a stacked split has one)."""
    if split.stacked:
        return [0] if len(split) else []
    seen: dict[tuple[int, ...], int] = {}
    for i in range(len(split)):
        seen.setdefault(layout(split.volume(i)[0]), i)
    return list(seen.values())


def _subset(split: Split, indices: Any) -> Split:
    """The items `indices` of a split (a cheap stand-in with the same shapes and layout)."""
    keep = list(indices)
    if split.stacked:
        images, masks = split.images[keep], split.masks[keep]
    else:
        images, masks = tuple(split.images[i] for i in keep), tuple(split.masks[i] for i in keep)
    return Split(images, masks, tuple(split.ids[i] for i in keep), split.td[keep], split.spacing)


def estimate_seconds(spec: StudySpec, data: StudyData, result: Preflight, *, tuned: bool = False) -> float:
    """Compute-seconds of every trial of the study, from the preflight's step times (`trial_seconds`).
    `tuned`: the tune phase is over, so it costs nothing. A confirm trial of the tuning seed restores
    its cell's winning training (`study.training.reuse`) when tune trials run the whole schedule:
    it only tests."""
    tuning = None if tuned else spec.tuning
    tune_epochs = (tuning.early_stopping.max_t or spec.training.epochs) if tuning is not None else 0
    restored = int(tuning is not None and restores(spec))
    total = 0.0
    for cell in expand_cells(spec):
        total += (len(spec.confirm_seeds) - restored) * trial_seconds(spec, data, result, cell)
        total += restored * trial_seconds(spec, data, result, cell, epochs=0)
        if tuning is not None:
            total += tuning.trials_per_cell * trial_seconds(spec, data, result, cell, epochs=tune_epochs, tested=False)
    return total


def trial_seconds(
    spec: StudySpec, data: StudyData, result: Preflight, cell: Mapping[str, Any], hparams: Mapping[str, Any] | None = None,
    *, epochs: int | None = None, tested: bool = True,
) -> float:
    """Compute-seconds of one trial of `cell` (with its `hparams`: the batch size sets the steps per
    epoch), from the preflight's step times: each epoch steps through the train split and predicts
    the validation split; a confirm trial (`tested`) then predicts and scores its calibration and
    test images under every condition, and its test images at every shifted level
    (`evaluation.shift`). Perturbing the images and the cluster's fixed start-up are not counted."""
    timing = result.timings[input_key(spec, cell)]
    level = data[data_key(spec, cell)]
    batch = int({**(hparams or {}), **cell}.get("batch_size") or spec.fixed_hyperparameters.batch_size)
    epoch = math.ceil(len(level.train) / batch) * timing.step_s + len(level.val) * timing.predict_s
    seconds = (epochs if epochs is not None else spec.training.epochs) * epoch
    if tested:
        conditions = 1 + len(spec.evaluation.perturbations) * len(spec.evaluation.severities)
        images = (len(level.calib) + len(level.test)) * conditions + sum(len(s.split) for s in level.shifted)
        seconds += images * (timing.predict_s + timing.score_s)
    return seconds


def plan_line(spec: StudySpec, data: StudyData, result: Preflight, *, at_once: int, where: str, tuned: bool = False) -> str:
    """What the study will start and for how long, e.g. '4 trials (4 cells x 1 seeds); about 1m10s
    at 2 trial(s) at once on this machine (estimated from the preflight's CPU step time)'.

    Args:
        at_once: trials the cluster runs at once (capped here by tuning.max_concurrent).
        where: where they run, for the sentence ("on this machine", "on this Ray cluster").
        tuned: the tune phase is over (a resumed study past it, a replicate): only confirm trials count.
    """
    count = count_trials(spec, tuned=tuned)
    if spec.tuning is not None and spec.tuning.max_concurrent:
        at_once = min(at_once, spec.tuning.max_concurrent)
    at_once = max(1, min(at_once, count.total))
    wall = estimate_seconds(spec, data, result, tuned=tuned) / at_once
    note = "; trials on GPUs run faster" if spec.resources.gpu > 0 else ""
    return (
        f"{count.describe()}; about {duration(wall)} at {at_once} trial(s) at once {where} "
        f"(estimated from the preflight's CPU step time{note})"
    )


__all__ = ["Preflight", "Timing", "estimate_seconds", "input_key", "plan_line", "preflight", "trial_seconds"]
