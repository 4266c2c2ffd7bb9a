"""A trial's config, validated once into a typed plan (no `.get()` defaults downstream)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from study.cells import Cell, cell_key
from study.models import resolve_architecture
from study.spec import ARCHITECTURE, HYPERPARAMETER_NAMES, Hyperparameters, StudySpec
from study.study_data import DataKey, data_key


@dataclass(frozen=True)
class TrialPlan:
    """Everything one trial needs to know, derived from the spec and its Tune config.

    The Tune config carries only the cell, the seed and the phase; hyperparameters come from the
    spec, overridden by any hyperparameter that is itself a factor of the cell.
    """

    cell: Cell
    seed: int
    phase: str
    hparams: Hyperparameters
    arch: Any
    data_key: DataKey

    @property
    def cell_key(self) -> str:
        return cell_key(self.cell)

    @classmethod
    def from_config(cls, spec: StudySpec, config: dict[str, Any]) -> TrialPlan:
        cell = dict(config["cell"])
        overrides = {k: v for k, v in cell.items() if k in HYPERPARAMETER_NAMES}
        hparams = spec.hyperparameters.model_copy(update=overrides)
        arch = resolve_architecture(str(cell[ARCHITECTURE]), family_overrides=spec.model, custom=spec.architectures)
        return cls(
            cell=cell,
            seed=int(config["seed"]),
            phase=str(config["phase"]),
            hparams=Hyperparameters.model_validate(hparams.model_dump()),
            arch=arch,
            data_key=data_key(spec, cell),
        )

    def params(self) -> dict[str, Any]:
        """Every factor and hyperparameter by its spec name, plus the seed (MLflow params)."""
        return {**self.hparams.model_dump(), **self.cell, "seed": self.seed}
