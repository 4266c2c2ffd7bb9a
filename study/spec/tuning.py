"""The `tuning:` and `confirm:` sections of a spec."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from study.spec.samplers import get_sampler
from study.strict import StrictModel


_Strict = StrictModel


class EarlyStopping(_Strict):
    """ASHA inside each cell (see `PerCellScheduler`), or none."""

    kind: Literal["asha", "none"] = "asha"
    grace_period: int = Field(1, ge=1, description="epochs every trial runs before it can be stopped")
    reduction_factor: float = Field(3.0, ge=2, description="keep the top 1/reduction_factor at each rung")
    max_t: int | None = Field(None, ge=1, description="epochs of a full trial; default training.epochs")

    @model_validator(mode="after")
    def _grace_within_max_t(self) -> EarlyStopping:
        if self.max_t is not None and self.grace_period > self.max_t:
            raise ValueError(f"grace_period ({self.grace_period}) must be <= max_t ({self.max_t})")
        return self


class Tuning(_Strict):
    """Per-cell Optuna search: every cell gets the same number of trials."""

    trials_per_cell: int = Field(8, ge=1, le=10_000)
    sampler: str = Field("tpe", description="a name of study.spec.samplers.SAMPLERS")
    seed: int = Field(0, ge=0, description="sampler seed and the training seed of tune-phase trials")
    early_stopping: EarlyStopping = EarlyStopping(kind="none")
    max_concurrent: int | None = Field(None, ge=1, description="default: as many trials as the cluster fits")

    @field_validator("sampler")
    @classmethod
    def _known_sampler(cls, name: str) -> str:
        get_sampler(name)  # a did-you-mean SegstudyError, which the spec loader prefixes with the file
        return name


class Confirm(_Strict):
    """Retrain each cell's chosen hyperparameters under these seeds and test them."""

    seeds: list[int] | None = None
