"""Early stopping that only ever compares trials of the same ablation cell.

A single global ASHA ranks every trial against every other: in a study where one cell is
intrinsically harder (a no-skip U-Net at high complexity, say), that cell's best configuration
is stopped because easier cells score higher. `PerCellScheduler` keeps one ASHA per cell and
routes each trial's results to its own cell's rungs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler


class PerCellScheduler(FIFOScheduler):
    """One AsyncHyperBandScheduler per cell; trials are started in FIFO order.

    Args:
        cell_of: maps a trial's config to its cell key.
        metric: metric to maximise; time_attr: the reported epoch counter.
        max_t, grace_period, reduction_factor: ASHA settings (see Ray's AsyncHyperBandScheduler).
    """

    def __init__(
        self,
        *,
        cell_of: Callable[[dict[str, Any]], str],
        metric: str,
        time_attr: str,
        max_t: int,
        grace_period: int,
        reduction_factor: float,
    ) -> None:
        super().__init__()
        self._metric, self._mode = metric, "max"
        self._cell_of = cell_of
        self._asha_kwargs = {
            "time_attr": time_attr,
            "metric": metric,
            "mode": "max",
            "max_t": max_t,
            "grace_period": grace_period,
            "reduction_factor": reduction_factor,
            "brackets": 1,
        }
        self.cells: dict[str, AsyncHyperBandScheduler] = {}
        self.stopped: dict[str, int] = {}

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return True

    def _asha(self, trial: Any) -> AsyncHyperBandScheduler:
        key = self._cell_of(trial.config)
        if key not in self.cells:
            self.cells[key] = AsyncHyperBandScheduler(**self._asha_kwargs)
            self.stopped[key] = 0
        return self.cells[key]

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self._asha(trial).on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        action = self._asha(trial).on_trial_result(tune_controller, trial, result)
        if action == TrialScheduler.STOP:
            self.stopped[self._cell_of(trial.config)] += 1
        return action

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> None:
        self._asha(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self._asha(trial).on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return "PerCellScheduler: " + ", ".join(f"{k}: {v} stopped" for k, v in sorted(self.stopped.items()))
