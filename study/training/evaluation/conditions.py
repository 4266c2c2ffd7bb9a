"""Test-split evaluation under controlled perturbations (robustness suite) and train/test shift.

Every architecture sees exactly the same corrupted pixels: each image's corruption is seeded by
(evaluation.perturbation_seed, image id, perturbation, severity), never by the trial. The realised
parameters go into per_image.csv next to the scores. The shifted test splits (the test split
rendered at other levels of a dataset factor, `evaluation.shift`) are built once per study
(study.training.inputs.study_data), so every arm sees the same shifted pixels too.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from study import metrics_names as M
from study.data import LevelData, Split, texture_disparity
from study.metrics import METRICS
from study.perturbations import condition_seed, get_perturbation
from study.spec import StudySpec
from study.training.evaluation.evaluate import evaluate_split

Predict = Callable[[Split], Sequence[np.ndarray]]


def perturbed(
    split: Split, perturbation: str, severity: int, *, base_seed: int, custom: Mapping[str, Any] | None = None
) -> tuple[Split, list[str]]:
    """The split with every image corrupted, and each image's realised parameters as JSON.

    `custom` is the spec's own ``perturbations:`` section (perturbations by import path)."""
    p = get_perturbation(perturbation, custom=custom or {})
    images, params, td = [], [], []
    for i, image_id in enumerate(split.ids):
        image, mask = split.volume(i)
        seed = condition_seed(base_seed, image_id, perturbation, severity)
        out, realised = p.apply(image, severity=severity, seed=seed, mask=mask)
        images.append(np.asarray(out, dtype=np.float32))
        params.append(json.dumps(realised, sort_keys=True))
        # Texture disparity of the corrupted image says where it lands on the complexity axis.
        td.append(texture_disparity(out[0], mask[0]) if np.isfinite(split.td[i]) else float("nan"))
    stacked = np.stack(images) if split.stacked else tuple(images)
    return dataclasses.replace(split, images=stacked, td=np.asarray(td, dtype=float)), params


def variants(split: Split, spec: StudySpec, *, clean: bool = True) -> Iterator[tuple[str, Split, list[str]]]:
    """(condition, split as seen under it, realised parameters per image): clean first, then
    every perturbation x severity in the spec. Built lazily: one corrupted copy at a time."""
    ev = spec.evaluation
    if clean:
        yield M.CLEAN, split, ["{}"] * len(split)
    for name in ev.perturbations:
        for severity in ev.severities:
            corrupted, params = perturbed(split, name, severity, base_seed=ev.perturbation_seed, custom=spec.perturbations)
            yield M.condition_name(name, severity), corrupted, params


def shifted_variants(level: LevelData) -> Iterator[tuple[str, Split, list[str]]]:
    """(condition, split, realised parameters) of each shifted test split, as `variants` yields
    them: 'shift:<factor>=<level>', nothing realised (no perturbation is applied)."""
    for shifted in level.shifted:
        yield M.shift_condition(shifted.factor, shifted.level), shifted.split, ["{}"] * len(shifted.split)


def with_test_levels(
    per_image: pd.DataFrame, level: LevelData, *, cell: Mapping[str, Any], shift: Mapping[str, Any]
) -> pd.DataFrame:
    """Add a test_<factor> column per `evaluation.shift` factor: the level each row's test images
    were rendered at (the cell's own level, its factor column, on every row but the shifted ones)."""
    out = per_image.copy()
    for factor in shift:
        tested_at = {M.shift_condition(s.factor, s.level): s.level for s in level.shifted if s.factor == factor}
        out[M.test_level_column(factor)] = [tested_at.get(c, cell[factor]) for c in out["condition"]]
    return out


def evaluate_conditions(predict: Predict, split: Split, spec: StudySpec) -> pd.DataFrame:
    """Per-image scores for every perturbation x severity in the spec (clean not included)."""
    ev = spec.evaluation
    frames = []
    for condition, corrupted, params in variants(split, spec, clean=False):
        frame = evaluate_split(
            predict(corrupted), corrupted, threshold=ev.threshold, nsd_tolerance=ev.nsd_tolerance, condition=condition
        )
        frame[M.PERTURBATION_PARAMS] = params
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def condition_metrics(per_image: pd.DataFrame) -> dict[str, float]:
    """Per-condition means as MLflow metric names, e.g. test_dice/gaussian_noise/3 or
    test_dice/shift_alpha/0.5."""
    out: dict[str, float] = {}
    for condition, group in per_image.groupby("condition", sort=True):
        if condition == M.CLEAN:  # logged as test_<metric> by the trial summary
            continue
        for metric in METRICS.values():
            out[M.condition_metric(metric.name, str(condition))] = float(group[metric.name].mean())
    return out
