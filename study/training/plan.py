"""A trial's config, validated once into a typed plan (no `.get()` defaults downstream)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from study import metrics_names as M
from study.spec.cells import Cell, cell_key
from study.models import resolve_architecture
from study.spec import ARCHITECTURE, HYPERPARAMETER_NAMES, Hyperparameters, StudySpec
from study.training.inputs.study_data import DataKey, data_key


@dataclass(frozen=True)
class TrialPlan:
    """Everything one trial needs to know, derived from the spec and its Tune config.

    The Tune config carries {"trial": {cell, seed, phase, hparams}}: `hparams` are the values
    Optuna sampled (tune) or chose (confirm); they override the spec's fixed values, and any
    hyperparameter that is itself a factor of the cell overrides both.
    """

    cell: Cell
    seed: int
    phase: str
    hparams: Hyperparameters
    arch: Any
    data_key: DataKey
    patch_size: int | None = None  # None: whole images
    pos_fraction: float | None = None
    optuna_trial: int | None = None  # tune phase: the trial number in the cell's Optuna study

    @property
    def cell_key(self) -> str:
        return cell_key(self.cell)

    @property
    def key(self) -> str:
        """The trial's identity across driver restarts (tagged on its MLflow run; resume skips
        keys that already finished)."""
        return trial_key(self.phase, self.cell_key, seed=self.seed, optuna_trial=self.optuna_trial)

    @staticmethod
    def config(
        cell: Cell, *, seed: int, phase: str, hparams: dict[str, Any] | None = None, optuna_trial: int | None = None
    ) -> dict[str, Any]:
        """The Tune config of one trial (the inverse of `from_config`); the one place its layout is
        written, for confirm trials (the engine) and tune trials (the searcher, with `optuna_trial`)."""
        trial = {"cell": dict(cell), "seed": seed, "phase": phase, "hparams": dict(hparams or {})}
        if optuna_trial is not None:
            trial["optuna_trial"] = optuna_trial
        return {"trial": trial}

    @classmethod
    def from_config(cls, spec: StudySpec, config: dict[str, Any]) -> TrialPlan:
        trial = config["trial"]
        cell = dict(trial["cell"])
        values = {
            **spec.fixed_hyperparameters.model_dump(),
            **trial["hparams"],
            **{k: v for k, v in cell.items() if k in HYPERPARAMETER_NAMES},
        }
        arch = resolve_architecture(
            str(cell[ARCHITECTURE]), family_overrides=spec.model, custom=spec.architectures, levels=cell
        )
        return cls(
            cell=cell,
            seed=int(trial["seed"]),
            phase=str(trial["phase"]),
            hparams=Hyperparameters.model_validate(values),
            arch=arch,
            data_key=data_key(spec, cell),
            patch_size=int(cell.get("patch_size", spec.patch_defaults.size)) if spec.patch_mode else None,
            pos_fraction=float(cell.get("pos_fraction", spec.patch_defaults.pos_fraction)) if spec.patch_mode else None,
            optuna_trial=None if trial.get("optuna_trial") is None else int(trial["optuna_trial"]),
        )

    def params(self) -> dict[str, Any]:
        """Every factor and hyperparameter by its spec name, plus the seed (MLflow params)."""
        return {**self.hparams.model_dump(), **self.cell, "seed": self.seed}


def trial_key(phase: str, cell: str, *, seed: int, optuna_trial: int | None = None) -> str:
    """'confirm|<cell>|seed=<s>' or 'tune|<cell>|optuna=<n>' (tune trials share one seed)."""
    which = f"optuna={optuna_trial}" if optuna_trial is not None else f"seed={seed}"
    return f"{phase}|{cell}|{which}"


def confirm_trial_of(key: str) -> tuple[str, int] | None:
    """(cell, seed) of a confirm-phase key from `trial_key`; None for other keys."""
    phase, cell, which = key.split("|")
    if phase != M.PHASE_CONFIRM or not which.startswith("seed="):
        return None
    return cell, int(which.removeprefix("seed="))


def optuna_trial_of(key: str) -> tuple[str, int] | None:
    """(cell, Optuna trial number) of a tune-phase key from `trial_key`; None for other keys."""
    phase, cell, which = key.split("|")
    if phase != M.PHASE_TUNE or not which.startswith("optuna="):
        return None
    return cell, int(which.removeprefix("optuna="))
