"""Build a study's data once, for every combination of the factors the dataset consumes.

The result goes to the Ray object store once (tune.with_parameters) and every trial reads it
from there: no trial regenerates or reloads data, and every cell with the same data factors
sees the very same test images, so comparisons between arms are paired.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd

from study.data import DATASETS, LevelData, ShiftedTest, Split
from study.spec import StudySpec

DataKey = tuple[Any, ...]
StudyData = dict[DataKey, LevelData]


def data_key(spec: StudySpec, cell: Mapping[str, Any]) -> DataKey:
    """The part of a cell that selects its data (e.g. (0.3,) for alpha=0.3)."""
    return tuple(cell[name] for name in spec.dataset_factors)


def build_study_data(spec: StudySpec) -> StudyData:
    """Build one `LevelData` per combination of dataset factor values, each with the test splits
    at the other levels `evaluation.shift` asks for (`LevelData.shifted`)."""
    names = spec.dataset_factors
    out: StudyData = {}
    for combo in itertools.product(*(spec.factors[n] for n in names)):
        out[tuple(combo)] = _build(spec, tuple(combo))
    return _with_shifted_tests(spec, out) if spec.evaluation.shift else out


def _shift_keys(spec: StudySpec, key: DataKey) -> Iterator[tuple[str, Any, DataKey]]:
    """(factor, level, data key) of every shifted test set of the models trained on `key`: each
    `evaluation.shift` level but the model's own, the other factors kept at the model's levels."""
    for factor, levels in spec.evaluation.shift.items():
        own = key[spec.dataset_factors.index(factor)]
        for level in levels:
            if level != own:  # numerically: 0 and 0.0 are one level, never evaluated twice
                yield factor, level, _at(spec, key, factor, level)


def _at(spec: StudySpec, key: DataKey, factor: str, level: Any) -> DataKey:
    """`key` with one factor moved to another level."""
    i = spec.dataset_factors.index(factor)
    return (*key[:i], level, *key[i + 1 :])


def _with_shifted_tests(spec: StudySpec, levels: StudyData) -> StudyData:
    """Attach the shifted test splits: a grid level's own test split where the level is in the
    grid (one object, shared), else the test split of a level built once here (the rest dropped)."""
    extra: dict[DataKey, Split] = {}
    out: StudyData = {}
    for key, level in levels.items():
        shifted = []
        for factor, value, other in _shift_keys(spec, key):
            if other not in levels and other not in extra:
                extra[other] = _build(spec, other).test
            test = levels[other].test if other in levels else extra[other]
            shifted.append(ShiftedTest(factor=factor, level=value, split=test))
        out[key] = dataclasses.replace(level, shifted=tuple(shifted))
    return out


def _build(spec: StudySpec, key: DataKey) -> LevelData:
    return DATASETS[spec.data.dataset].build(spec.data, **dict(zip(spec.dataset_factors, key)))


def summarise_data(spec: StudySpec, data: StudyData) -> pd.DataFrame:
    """One row per data level and split: size, mean texture disparity, foreground share; a level
    only `evaluation.shift` tests at has its test row alone.

    Logged on the study run so the complexity axis can be read in measured TD, not only alpha.
    """
    rows = [_summary_row(spec, key, name, split) for key, level in data.items() for name, split in level.named_splits()]
    extra = {
        other: shifted.split
        for key, level in data.items()
        for shifted in level.shifted
        if (other := _at(spec, key, shifted.factor, shifted.level)) not in data
    }
    rows += [_summary_row(spec, key, "test", split) for key, split in extra.items()]  # test-only shift levels
    return pd.DataFrame(rows)


def _summary_row(spec: StudySpec, key: DataKey, split_name: str, split: Split) -> dict[str, Any]:
    return {
        **dict(zip(spec.dataset_factors, key)),
        "split": split_name,
        "n": len(split),
        "td_mean": float(np.nanmean(split.td)) if np.isfinite(split.td).any() else float("nan"),
        "foreground_fraction": float(np.mean(split.foreground_fraction)),
    }
