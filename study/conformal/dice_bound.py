"""Split-conformal lower bounds on per-image Dice, one calibration per stratum (Mondrian).

Nonconformity is the optimism of the quality score: r = score - Dice. On n calibration images
of a stratum, q = the ceil((n + 1)(1 - alpha))-th smallest r; then for a new exchangeable image
P(Dice >= score - q) >= 1 - alpha. Calibrating each stratum (perturbation x severity) on its
own keeps the guarantee per stratum, not only on average over strata. Too few calibration
images for the level give q = inf: the bound is 0, valid but empty, and says so.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pydantic import Field

from study.errors import SegstudyError
from study.strict import StrictRecord


def conformal_quantile(residuals: np.ndarray, alpha: float) -> float:
    """The finite-sample conformal quantile of `residuals` at level 1 - alpha (inf if n is too small).

    Example:
        >>> conformal_quantile(np.arange(1.0, 10.0), 0.1)  # n = 9: the 9th smallest
        9.0
        >>> conformal_quantile(np.arange(1.0, 5.0), 0.1)   # n = 4 cannot certify 90%
        inf
    """
    values = np.sort(np.asarray(residuals, dtype=np.float64))
    rank = math.ceil((len(values) + 1) * (1.0 - alpha))
    return float(values[rank - 1]) if rank <= len(values) else math.inf


def lower_bound(score: float, quantile: float) -> float:
    """The Dice lower bound for one image: score - quantile, within [0, 1]."""
    return float(np.clip(score - quantile, 0.0, 1.0)) if math.isfinite(quantile) else 0.0


Range = tuple[float, float]


class StratumCalibration(StrictRecord):
    """What one stratum's calibration images fixed: the residual quantile and the ranges seen."""

    n: int = Field(ge=0)
    quantile: float | None = Field(description="residual quantile; None when n is too small for the level")
    fnr_threshold: float | None = Field(description="risk-controlled probability threshold; None without foreground")
    score_range: Range
    noise_range: Range
    td_range: Range | None = None

    @property
    def q(self) -> float:
        return math.inf if self.quantile is None else self.quantile


class Calibration(StrictRecord):
    """Everything `segstudy predict` needs to bound a new image: saved as calibration.json."""

    alpha: float = Field(gt=0, lt=1)
    fnr_alpha: float = Field(gt=0, lt=1)
    threshold: float = Field(gt=0, lt=1)
    strata: dict[str, StratumCalibration]

    @property
    def level(self) -> float:
        return 1.0 - self.alpha

    def bound(self, score: float, stratum: str) -> float:
        return lower_bound(score, self.stratum(stratum).q)

    def stratum(self, name: str) -> StratumCalibration:
        if name not in self.strata:
            raise SegstudyError(f"calibration has no stratum {name!r}; accepted: {', '.join(sorted(self.strata))}")
        return self.strata[name]

    @classmethod
    def from_json(cls, text: str, *, where: str) -> Calibration:
        try:
            return cls.model_validate_json(text)
        except ValueError as exc:
            first = str(exc).splitlines()[0]
            raise SegstudyError(f"{where}: not a segstudy calibration ({first})") from None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
