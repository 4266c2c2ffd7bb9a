"""The spec layer: the YAML schema (`schema`), the ablation grid (`cells`) and the search space
(`space`, `tuning`). Pure pydantic and Python: no torch, no Ray, no MLflow.

`from study.spec import load_spec, StudySpec` is the public way in; the submodules hold the rest.
"""

from __future__ import annotations

from study.spec.schema import (
    ARCHITECTURE,
    HYPERPARAMETER_NAMES,
    Conformal,
    Evaluation,
    Hyperparameters,
    LearningGate,
    StudySpec,
    Training,
    check_data,
    load_spec,
    parse_spec,
)
from study.spec.grid import DEFAULT_MAX_TRIALS, LARGE_GRID_FLAG, TrialCount, check_grid_size, count_trials

__all__ = [
    "ARCHITECTURE",
    "DEFAULT_MAX_TRIALS",
    "LARGE_GRID_FLAG",
    "HYPERPARAMETER_NAMES",
    "Conformal",
    "Evaluation",
    "Hyperparameters",
    "LearningGate",
    "StudySpec",
    "TrialCount",
    "Training",
    "check_data",
    "check_grid_size",
    "count_trials",
    "load_spec",
    "parse_spec",
]
