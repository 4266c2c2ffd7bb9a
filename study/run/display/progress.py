"""Where a running study stands: trials per phase and cell, elapsed time and an ETA.

`StudyProgress` is plain state, fed by `ProgressCallback` (Tune's driver callbacks) and drawn by
`study.run.display.console`; it never touches Ray itself, so a test can drive it by hand.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ray import tune

from study import metrics_names as M
from study.run.tune.tune_callback import error_reason, error_text
from study.run.tune.tune_report import failure_of, stopped_early
from study.spec import StudySpec
from study.training import TrialPlan

DONE, STOPPED, FAILED = "done", "stopped early", "FAILED"


@dataclass
class CellCount:
    """One cell's trials in the current phase."""

    total: int
    done: int = 0
    stopped: int = 0
    failed: int = 0
    running: int = 0
    best: float = math.nan  # best objective (validation Dice) any trial of the cell reached

    @property
    def left(self) -> int:
        return max(0, self.total - self.done - self.stopped - self.failed)


@dataclass(frozen=True)
class TrialEnd:
    """One ended trial, as a line of the console says it."""

    phase: str
    cell: str
    seed: int
    outcome: str  # DONE, STOPPED or FAILED
    value: float  # the objective at its end (NaN: none)
    epoch: int
    seconds: float
    reason: str = ""  # why it failed, or why its model did not learn
    test_dice: float = math.nan
    trained_in: str = ""  # a confirm trial that restored a tune trial's training: that trial's key


@dataclass
class StudyProgress:
    """Counts of one study's trials; `begin` starts a phase (tune, confirm) or a round of the
    confirm phase with its totals."""

    name: str
    clock: Callable[[], float] = time.monotonic
    phase: str = ""
    cells: dict[str, CellCount] = field(default_factory=dict)
    durations: list[float] = field(default_factory=list)
    most_running: int = 1
    stage: str = ""  # where in the phase, e.g. a sequential confirm phase's "round 2 of up to 8, 4 seeds per cell"
    open_claims: tuple[str, ...] = ()  # the declared claims a round runs for (sequential confirm)

    def __post_init__(self) -> None:
        self.started = self.phase_started = self.clock()

    def begin(self, phase: str, totals: Mapping[str, int], *, stage: str = "", open_claims: Sequence[str] = ()) -> None:
        self.phase, self.stage, self.open_claims = phase, stage, tuple(open_claims)
        self.cells = {cell: CellCount(total=n) for cell, n in sorted(totals.items())}
        self.durations = []
        self.phase_started = self.clock()

    def trial_started(self, cell: str) -> None:
        count = self._cell(cell)
        count.running += 1
        self.most_running = max(self.most_running, self.count("running"))

    def trial_result(self, cell: str, value: float) -> None:
        count = self._cell(cell)
        if not math.isnan(value) and (math.isnan(count.best) or value > count.best):
            count.best = value

    def trial_retried(self, cell: str) -> None:
        count = self._cell(cell)
        count.running = max(0, count.running - 1)

    def trial_ended(self, end: TrialEnd) -> None:
        count = self._cell(end.cell)
        count.running = max(0, count.running - 1)
        attr = {DONE: "done", STOPPED: "stopped", FAILED: "failed"}[end.outcome]
        setattr(count, attr, getattr(count, attr) + 1)
        self.trial_result(end.cell, end.value)
        self.durations.append(end.seconds)

    def count(self, what: str) -> int:
        """Sum over cells of `done`, `stopped`, `failed`, `running`, `left` or `total`."""
        return sum(getattr(c, what) for c in self.cells.values())

    @property
    def ended(self) -> int:
        return self.count("done") + self.count("stopped") + self.count("failed")

    def elapsed_s(self) -> float:
        return self.clock() - self.started

    def eta_s(self) -> float | None:
        """Seconds the phase still needs: trials left x median trial time / trials at once.

        None until a trial of the phase has ended; early-stopped trials make it pessimistic at
        first and right by the end, which is the honest direction.
        """
        if not self.durations:
            return None
        left = self.count("left")
        return left * statistics.median(self.durations) / max(1, self.most_running)

    def _cell(self, cell: str) -> CellCount:
        return self.cells.setdefault(cell, CellCount(total=0))


class ProgressSink(Protocol):
    """What the console offers the callback (see study.run.display.console)."""

    def phase_started(self, progress: StudyProgress) -> None: ...
    def trial_ended(self, progress: StudyProgress, end: TrialEnd) -> None: ...
    def tick(self, progress: StudyProgress) -> None: ...


class _NoSink:
    def phase_started(self, progress: StudyProgress) -> None: ...
    def trial_ended(self, progress: StudyProgress, end: TrialEnd) -> None: ...
    def tick(self, progress: StudyProgress) -> None: ...


class ProgressCallback(tune.Callback):
    """Tune driver callback: turns trial events into `StudyProgress` updates for the console."""

    def __init__(self, progress: StudyProgress, sink: ProgressSink, spec: StudySpec, *, full_epochs: int) -> None:
        self.progress = progress
        self.sink = sink
        self.spec = spec
        self.full_epochs = full_epochs
        self._started: dict[str, float] = {}
        self._cells: dict[str, str] = {}  # trial id -> cell key: results arrive every epoch

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks into tuner.pkl; the console's stream is not picklable and
        # means nothing in another process, so the copy carries no display.
        return {**self.__dict__, "sink": _NoSink(), "progress": StudyProgress(self.progress.name)}

    def _cell(self, trial: Any) -> str:
        if trial.trial_id not in self._cells:
            self._cells[trial.trial_id] = TrialPlan.from_config(self.spec, trial.config).cell_key
        return self._cells[trial.trial_id]

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._started.setdefault(trial.trial_id, self.progress.clock())
        self.progress.trial_started(self._cell(trial))

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any) -> None:
        value = result.get(self.spec.objective)
        if isinstance(value, int | float):
            self.progress.trial_result(self._cell(trial), float(value))

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        final = trial.last_result or {}
        failure = failure_of(final)
        if failure:
            self._end(trial, FAILED, reason=failure)
            return
        outcome = STOPPED if stopped_early(final, full_epochs=self.full_epochs) else DONE
        issue = final.get(M.LEARNING_ISSUE) if final.get(M.LEARNED) == 0 else ""
        self._end(trial, outcome, reason=f"did not learn: {issue}" if issue else "")

    def on_trial_recover(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.progress.trial_retried(self._cell(trial))

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._end(trial, FAILED, reason=error_reason(error_text(trial)))

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        self.sink.tick(self.progress)

    def _end(self, trial: Any, outcome: str, *, reason: str) -> None:
        plan = TrialPlan.from_config(self.spec, trial.config)
        self._cells.pop(trial.trial_id, None)
        final = trial.last_result or {}
        value = final.get(self.spec.objective, math.nan)
        end = TrialEnd(
            phase=plan.phase,
            cell=plan.cell_key,
            seed=plan.seed,
            outcome=outcome,
            value=float(value) if isinstance(value, int | float) else math.nan,
            epoch=int(final.get(M.EPOCH, 0) or 0),
            seconds=self.progress.clock() - self._started.pop(trial.trial_id, self.progress.clock()),
            reason=reason,
            test_dice=float(final.get(M.TEST_DICE, math.nan)),
            trained_in=str(final.get(M.TRAINED_IN) or ""),
        )
        self.progress.trial_ended(end)
        self.sink.trial_ended(self.progress, end)


__all__ = ["DONE", "FAILED", "STOPPED", "CellCount", "ProgressCallback", "StudyProgress", "TrialEnd"]
