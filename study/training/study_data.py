"""Build a study's data once, for every combination of the factors the dataset consumes.

The result goes to the Ray object store once (tune.with_parameters) and every trial reads it
from there: no trial regenerates or reloads data, and every cell with the same data factors
sees the very same test images, so comparisons between arms are paired.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from study.data import DATASETS, LevelData
from study.spec import StudySpec

DataKey = tuple[Any, ...]
StudyData = dict[DataKey, LevelData]


def data_key(spec: StudySpec, cell: Mapping[str, Any]) -> DataKey:
    """The part of a cell that selects its data (e.g. (0.3,) for alpha=0.3)."""
    return tuple(cell[name] for name in spec.dataset_factors)


def build_study_data(spec: StudySpec) -> StudyData:
    """Build one `LevelData` per combination of dataset factor values."""
    entry = DATASETS[spec.data.dataset]
    names = spec.dataset_factors
    out: StudyData = {}
    for combo in itertools.product(*(spec.factors[n] for n in names)):
        out[tuple(combo)] = entry.build(spec.data, **dict(zip(names, combo)))
    return out


def summarise_data(spec: StudySpec, data: StudyData) -> pd.DataFrame:
    """One row per data level and split: size, mean texture disparity, foreground share.

    Logged on the study run so the complexity axis can be read in measured TD, not only alpha.
    """
    rows = []
    for key, level in data.items():
        for split_name, split in level.named_splits():
            rows.append(
                {
                    **dict(zip(spec.dataset_factors, key)),
                    "split": split_name,
                    "n": len(split),
                    "td_mean": float(np.nanmean(split.td)) if np.isfinite(split.td).any() else float("nan"),
                    "foreground_fraction": float(np.mean(split.foreground_fraction)),
                }
            )
    return pd.DataFrame(rows)
