"""The Tune stopper of every phase: a trial's epoch limit, and the whole phase once the driver
was asked to stop (SIGINT or SIGTERM, recorded by `study.process_state`).

Ray Tune 2.60 takes Ctrl-C inside `Tuner.fit` as "end this fit" and returns normally, so the
driver went on to the next phase. segstudy owns the signals instead (`process_state.stop_on_signals`)
and ends a phase through `Stopper.stop_all`: Tune then stops every trial without telling the
searcher, the scheduler or the callbacks an outcome. Optuna keeps those trials RUNNING and their
MLflow runs are closed KILLED (`TrackingCallback.on_experiment_end`), so a resume runs them again
instead of counting a cut trial as spent budget (docs/ARCHITECTURE.md 3, "Stopping").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ray import tune

from study import process_state


class PhaseStopper(tune.Stopper):
    """Stop a trial at `max_epochs` (None: never here; the trainable ends itself), and the whole
    phase once a stop was asked for; `note` is told once, with the signal's name, when it is.

    Example:
        >>> stopper = PhaseStopper(epoch_key="epoch", max_epochs=20)
        >>> stopper("t1", {"epoch": 20}), stopper("t2", {"epoch": 3}), stopper.stop_all()
        (True, False, False)
    """

    def __init__(self, *, epoch_key: str, max_epochs: int | None, note: Callable[[str], None] | None = None) -> None:
        self.epoch_key = epoch_key
        self.max_epochs = max_epochs
        self.note = note
        self._noted = False

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its stopper into tuner.pkl; the console behind `note` means nothing elsewhere.
        return {**self.__dict__, "note": None}

    def __call__(self, trial_id: str, result: Mapping[str, Any]) -> bool:
        return self.max_epochs is not None and int(result.get(self.epoch_key, 0)) >= self.max_epochs

    def stop_all(self) -> bool:
        stop = process_state.stop_requested()
        if stop and not self._noted and self.note is not None:
            self._noted = True
            self.note(process_state.stop_signal_name() or "stop")
        return stop


__all__ = ["PhaseStopper"]
