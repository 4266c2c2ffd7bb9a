"""The Tune stopper of every phase: a trial's epoch limit, and the whole phase once the driver
was asked to stop (SIGINT, SIGTERM or SIGHUP, recorded by `study.process_state`) or met a full disk.

Ray Tune 2.60 takes Ctrl-C inside `Tuner.fit` as "end this fit" and returns normally, so the
driver went on to the next phase. segstudy owns the signals instead (`process_state.stop_on_signals`)
and ends a phase through `Stopper.stop_all`: Tune then stops every trial without telling the
searcher, the scheduler or the callbacks an outcome. Optuna keeps those trials RUNNING and their
MLflow runs are closed KILLED (`TrackingCallback.on_experiment_end`), so a resume runs them again
instead of counting a cut trial as spent budget (docs/ARCHITECTURE.md 3, "Stopping").

A full disk met by a Tune hook of the driver (a callback writing MLflow, the study log or a
result file, the searcher writing Optuna's storage) would otherwise escape Tune's loop as a
traceback and end the driver mid-write; `full_disk_stops` turns it into the same stop.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from ray import tune

from study import disk, process_state

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])


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
            self.note(process_state.stop_reason() or "stop")
        return stop


def full_disk_stops(where: Callable[[Any], Any]) -> Callable[[F], F]:
    """Decorate a Tune hook method (of a callback or the searcher) so that a full disk met inside
    it records a stop (`process_state.stop_on_full_disk`) and the hook returns None: Tune ends the
    phase at its next step, as after Ctrl-C, and the trials it cuts run again on resume.

    Args:
        where: the hook's object -> the file or folder its writes go to (or a list of them: the
            one on the fullest disk is named), for the stop's line when the error names no file
            (SQLite's "database or disk is full" names none, nor does a copy by sendfile).
    """

    def decorate(method: F) -> F:
        @functools.wraps(method)
        def hook(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return method(self, *args, **kwargs)
            except Exception as exc:
                cause = disk.no_space_cause(exc, where=where(self))
                if cause is None or not process_state.stop_on_full_disk(cause):
                    raise
                log.info("%s.%s: %s; stopping the study", type(self).__name__, method.__name__, cause)
                return None

        return hook  # type: ignore[return-value]

    return decorate


__all__ = ["PhaseStopper", "full_disk_stops"]
