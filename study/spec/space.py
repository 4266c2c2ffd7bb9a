"""The searchable part of `hyperparameters:`: each entry a fixed value or one distribution.

    hyperparameters:
      lr: {loguniform: [1.0e-4, 1.0e-2]}
      batch_size: {choice: [4, 8, 16]}
      weight_decay: {uniform: [0.0, 1.0e-4]}
      optimizer: adam                      # fixed

Distributions become Optuna distributions; fixed values pass through unchanged.
"""

from __future__ import annotations

import math

from collections.abc import Mapping
from typing import Any

import optuna.distributions as od

KINDS = ("loguniform", "uniform", "int", "choice")
Distribution = od.BaseDistribution


def is_distribution(value: Any) -> bool:
    """A one-key mapping naming a distribution kind (or grid_search, which is refused later)."""
    return isinstance(value, Mapping) and len(value) == 1


def parse_distribution(name: str, value: Mapping[str, Any]) -> Distribution:
    """Turn `{kind: args}` into an Optuna distribution.

    Raises:
        ValueError: with a message naming the hyperparameter and what is accepted.
    """
    ((kind, args),) = value.items()
    if kind == "grid_search":
        raise ValueError(
            f"{name}: grid_search is not accepted here (Optuna cannot search a grid of cells); "
            f"put the values under factors.{name} to ablate them, or use {{choice: [...]}} to tune them"
        )
    if kind not in KINDS:
        raise ValueError(f"{name}: unknown distribution '{kind}'; accepted: {', '.join(KINDS)}")
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise ValueError(f"{name}: choice needs a non-empty list of values")
        return od.CategoricalDistribution(list(args))
    if not (isinstance(args, list) and len(args) == 2):
        raise ValueError(f"{name}: {kind} needs [low, high]")
    low, high = args
    finite = all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in (low, high))
    if not finite or not low < high:
        raise ValueError(f"{name}: {kind} needs finite numbers low < high, got [{low}, {high}]")
    if kind == "loguniform":
        if low <= 0:
            raise ValueError(f"{name}: loguniform needs low > 0, got {low}")
        return od.FloatDistribution(float(low), float(high), log=True)
    if kind == "uniform":
        return od.FloatDistribution(float(low), float(high))
    if int(low) != low or int(high) != high:
        raise ValueError(f"{name}: int needs whole-number bounds, got [{low}, {high}]")
    return od.IntDistribution(int(low), int(high))


def distribution_values(dist: Distribution) -> list[Any]:
    """The values a distribution can take, for bound checks against the hyperparameter's type."""
    if isinstance(dist, od.CategoricalDistribution):
        return list(dist.choices)
    return [dist.low, dist.high]  # type: ignore[attr-defined]


def grid_size(space: Mapping[str, Distribution]) -> int:
    """Number of points of a grid over `space` (grid sampling needs choice-only spaces)."""
    size = 1
    for dist in space.values():
        size *= len(dist.choices)  # type: ignore[attr-defined]
    return size
