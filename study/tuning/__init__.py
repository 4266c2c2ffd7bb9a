"""Fair tuning inside every ablation cell: per-cell Optuna studies and per-cell early stopping."""

from __future__ import annotations

from study.tuning.config import Confirm, EarlyStopping, Tuning
from study.tuning.space import grid_size, is_distribution, parse_distribution

__all__ = ["Confirm", "EarlyStopping", "Tuning", "grid_size", "is_distribution", "parse_distribution"]
