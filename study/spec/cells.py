"""The ablation grid: every combination of factor values is a cell, named canonically.

The canonical cell string (`alpha=0.1,architecture=unet`, sorted by factor) is the key that
MLflow tags, Tune configs and the analysis all share.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from study.spec import StudySpec

Cell = dict[str, Any]


def format_value(value: Any) -> str:
    """Shortest faithful text for a factor value (0.1 stays '0.1', True becomes 'true')."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def cell_key(cell: Mapping[str, Any]) -> str:
    """Canonical `factor=value,...` string, sorted by factor name.

    Example:
        >>> cell_key({"architecture": "unet", "alpha": 0.1})
        'alpha=0.1,architecture=unet'
    """
    return ",".join(f"{k}={format_value(cell[k])}" for k in sorted(cell))


def expand_cells(spec: StudySpec) -> list[Cell]:
    """Every combination of the spec's factor values, in a stable order."""
    names = sorted(spec.factors)
    return [dict(zip(names, combo)) for combo in itertools.product(*(spec.factors[n] for n in names))]
