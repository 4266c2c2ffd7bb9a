"""One Optuna study per ablation cell, asked and told through a single Ray Tune searcher.

Ray's OptunaSearch runs one Optuna study over the whole config and refuses grid_search, so it
cannot tune each cell of an ablation grid separately. `CellSearcher` keeps one study per cell in
an Optuna RDB storage (open it with `optuna-dashboard sqlite:///.../optuna.db`), hands out trials
round-robin across cells so every arm gets the same budget, and tells each study what its trials
did: COMPLETE with the value, PRUNED when early stopping ended the trial, FAIL when it crashed or
diverged (never a made-up bad value, which would mislead the sampler).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher

from study import metrics_names as M
from study import process_state
from study.errors import SegstudyError
from study.spec.cells import Cell, cell_key
from study.spec.samplers import get_sampler, make_sampler
from study.run.tune.stopping import full_disk_stops
from study.run.tune.tune_report import FAILURE
from study.training.plan import TrialPlan, optuna_trial_of

log = logging.getLogger(__name__)

def cell_seed(base: int, index: int, *more: int) -> int:
    """Independent, reproducible sampler seed per cell (and per ask within it)."""
    return int(np.random.SeedSequence([base, index, *more]).generate_state(1)[0])


REQUEUED_FROM = "segstudy_requeued_from"  # user attr: this trial re-runs one a dead driver left


class CellSearcher(Searcher):
    """Ray Tune searcher over `cells`, each with its own Optuna study and equal trial budget.

    Args:
        cells: the ablation cells, in order.
        space: hyperparameter name -> Optuna distribution (the same for every cell).
        trials_per_cell: Optuna trials each cell gets.
        storage: Optuna storage URL, e.g. "sqlite:////abs/optuna.db".
        prefix: study-name prefix; each study is named "<prefix>/<cell key>".
        sampler: a name of `study.spec.samplers.SAMPLERS`.
        seed: base sampler seed; each cell derives its own.
        trial_seed: the training seed every tune-phase trial uses (so configs, not inits, differ).
        metric: the reported metric that Optuna maximises.
        max_t: epochs of a full trial; a trial that ended before it was stopped early (PRUNED).
    """

    def __init__(
        self,
        *,
        cells: Sequence[Cell],
        space: Mapping[str, Any],
        trials_per_cell: int,
        storage: str,
        prefix: str,
        sampler: str,
        seed: int,
        trial_seed: int,
        metric: str,
        max_t: int,
        epoch_key: str,
    ) -> None:
        super().__init__(metric=metric, mode="max")
        self.cells = [dict(c) for c in cells]
        self.space = dict(space)
        self.trials_per_cell = trials_per_cell
        self.sampler_kind = sampler
        self.seed = seed
        self.trial_seed = trial_seed
        self.max_t = max_t
        self.epoch_key = epoch_key
        self.storage = storage
        self.live: dict[str, tuple[int, int]] = {}  # tune trial id -> (cell index, optuna trial number)
        self.last: dict[str, dict[str, Any]] = {}
        self._handles: dict[str, optuna.Trial] = {}
        process_state.quiet_optuna()
        self.studies = [
            optuna.create_study(
                study_name=f"{prefix}/{cell_key(cell)}",
                storage=storage,
                direction="maximize",
                sampler=make_sampler(sampler, seed=cell_seed(seed, i), space=self.space, n_trials=trials_per_cell),
                load_if_exists=True,
            )
            for i, cell in enumerate(self.cells)
        ]
        self.asked = [_counted(study) for study in self.studies]

    def requeue_interrupted(self, finished: Mapping[tuple[str, int], Finished] | None = None) -> int:
        """Fail the trials a dead driver left RUNNING and queue them again with the same
        parameters; returns how many. Call after the MLflow runs were reconciled.

        Args:
            finished: (cell key, trial number) -> the outcome of a trial whose MLflow run
                FINISHED (`finished_in_mlflow`). Such a trial ran to its end: a stop that cut the
                driver's telling (a full disk under the Optuna database) left it RUNNING in Optuna,
                and it is told its outcome instead of being run a second time.
        """
        by_cell: dict[str, dict[int, Finished]] = {}
        for (cell, number), outcome in (finished or {}).items():
            by_cell.setdefault(cell, {})[number] = outcome
        n = sum(_requeue_interrupted(study, by_cell.get(cell_key(c), {})) for c, study in zip(self.cells, self.studies))
        self.asked = [_counted(study) for study in self.studies]
        return n

    def requeue_failed(self, cell: str, number: int) -> bool:
        """Queue a failed trial of one cell again with its parameters (one the machine failed, or
        any with `segstudy resume --retry-failed`), so its budget is spent once more; True when it
        is queued (now or before), False when Optuna does not hold it as failed."""
        for c, study in zip(self.cells, self.studies):
            if cell_key(c) != cell:
                continue
            trials = study.get_trials(deepcopy=False)
            if number >= len(trials) or trials[number].state != TrialState.FAIL:
                return False
            if not any(t.user_attrs.get(REQUEUED_FROM) == number for t in trials):  # never queued twice
                study.enqueue_trial(trials[number].params, user_attrs={REQUEUED_FROM: number})
            self.asked = [_counted(s) for s in self.studies]
            return True
        return False

    def remaining(self) -> int:
        """Trials still to run across cells (all of them for a new study; fewer on resume)."""
        return sum(self.remaining_per_cell().values())

    def remaining_per_cell(self) -> dict[str, int]:
        """Trials still to run, per cell key."""
        return {cell_key(c): max(0, self.trials_per_cell - n) for c, n in zip(self.cells, self.asked)}

    def state_of(self, cell: str, number: int) -> str | None:
        """The Optuna state name of one trial ("COMPLETE", "PRUNED", "FAIL", "RUNNING"), if any."""
        for c, study in zip(self.cells, self.studies):
            if cell_key(c) == cell:
                trials = study.get_trials(deepcopy=False)
                return trials[number].state.name if number < len(trials) else None
        return None

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return True  # metric and mode are ours; Tune's are not needed

    @full_disk_stops(lambda self: self.storage.removeprefix("sqlite:///"))
    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if process_state.stop_requested():
            # The phase is ending (study.run.tune.stopping): no trial is asked that would only be cut.
            # FINISHED, not None: with no trial live, Tune waits up to 600 s for a searcher that says None.
            return Searcher.FINISHED
        remaining = [i for i, n in enumerate(self.asked) if n < self.trials_per_cell]
        if not remaining:
            return Searcher.FINISHED
        index = min(remaining, key=lambda i: (self.asked[i], i))  # round-robin: fewest asked first
        study = self.studies[index]
        # A fresh sampler per ask, seeded by (cell, ask number), makes the k-th ask of a cell
        # the same draw whether or not a driver restart came in between (a restarted sampler
        # would replay its random stream from the start). A grid sampler shuffles its grid by
        # seed, so it keeps the cell's seed and is deterministic given the trials so far.
        per_ask = () if get_sampler(self.sampler_kind).grid else (self.asked[index],)
        study.sampler = make_sampler(
            self.sampler_kind,
            seed=cell_seed(self.seed, index, *per_ask),
            space=self.space,
            n_trials=self.trials_per_cell,
        )
        trial = study.ask(self.space)
        self.asked[index] += 1
        self.live[trial_id] = (index, trial.number)
        self._handles[trial_id] = trial
        return TrialPlan.config(
            self.cells[index], seed=self.trial_seed, phase=M.PHASE_TUNE, hparams=trial.params, optuna_trial=trial.number
        )

    @full_disk_stops(lambda self: self.storage.removeprefix("sqlite:///"))
    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        self.last[trial_id] = result
        handle = self._handles.get(trial_id)
        value = result.get(self.metric)
        if handle is not None and value is not None and math.isfinite(float(value)):
            # Intermediate values let the dashboard draw learning curves and give a pruned
            # trial its last value.
            handle.report(float(value), step=int(result[self.epoch_key]))

    @full_disk_stops(lambda self: self.storage.removeprefix("sqlite:///"))
    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        if trial_id not in self.live:
            return
        index, number = self.live.pop(trial_id)
        result = result or self.last.pop(trial_id, None) or {}
        self.last.pop(trial_id, None)
        self._handles.pop(trial_id, None)
        study = self.studies[index]
        value = result.get(self.metric)
        if error or result.get(FAILURE) or value is None or not math.isfinite(float(value)):
            study.tell(number, state=TrialState.FAIL)
        elif int(result.get(self.epoch_key, 0)) < self.max_t:
            study.tell(number, state=TrialState.PRUNED)
        else:
            study.tell(number, float(value))

    def best(self) -> dict[str, dict[str, Any]]:
        """Chosen hyperparameters per cell key: the best COMPLETE trial of each cell's study.

        A cell whose trials all failed or were pruned falls back to its best pruned trial; one
        with none at all is left out (and reported by the engine).
        """
        chosen: dict[str, dict[str, Any]] = {}
        for cell, study in zip(self.cells, self.studies):
            done = [t for t in study.trials if t.state == TrialState.COMPLETE]
            if not done:
                done = [t for t in study.trials if t.state == TrialState.PRUNED and t.intermediate_values]
            if done:
                chosen[cell_key(cell)] = dict(max(done, key=_trial_value).params)
        return chosen

    def save(self, checkpoint_path: str) -> None:
        # The studies themselves live in the RDB storage; only the in-flight bookkeeping is ours.
        # JSON, not pickle: a study folder must stay data, never code that a resume would run.
        with open(checkpoint_path, "w", encoding="utf-8") as f:
            json.dump({"asked": self.asked, "live": {k: list(v) for k, v in self.live.items()}}, f)

    def restore(self, checkpoint_path: str) -> None:
        try:
            with open(checkpoint_path, encoding="utf-8") as f:
                state = json.load(f)
            asked = [int(n) for n in state["asked"]]
            live = {str(k): (int(v[0]), int(v[1])) for k, v in state["live"].items()}
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            raise SegstudyError(f"{checkpoint_path}: not a segstudy searcher state ({type(exc).__name__})") from None
        self.asked, self.live = asked, live
        self._handles = {}


@dataclass(frozen=True)
class Finished:
    """A tune trial's outcome as its FINISHED MLflow run recorded it."""

    value: float | None
    pruned: bool


def finished_in_mlflow(runs: Mapping[str, Any], metric: str) -> dict[tuple[str, int], Finished]:
    """(cell key, trial number) -> outcome, for the tune trials among `runs` (trial key -> FINISHED
    MLflow run, `study.run.record.reconcile.Reconciled.results`)."""
    out = {}
    for key, run in runs.items():
        trial = optuna_trial_of(key)
        if trial is not None:
            value = run.data.metrics.get(metric)
            out[trial] = Finished(None if value is None else float(value),
                                  run.data.tags.get(M.STOPPED_EARLY_TAG) == "true")
    return out


def _requeue_interrupted(study: optuna.Study, finished: Mapping[int, Finished]) -> int:
    """Trials left RUNNING by a driver that died or was stopped are failed and queued again with
    the same parameters (what Optuna's RetryFailedTrialCallback does for crashed workers).

    Queued first, failed second, and never queued twice: a driver cut between the two steps
    leaves the trial RUNNING with its copy queued, and the next one only fails it. Failed first,
    a cut would leave a FAIL that counts as spent budget and is never run again. A trial in
    `finished` (its MLflow run FINISHED) is told its outcome instead.
    """
    queued = {t.user_attrs.get(REQUEUED_FROM) for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))}
    n = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        done = finished.get(trial.number)
        if done is not None and done.pruned:
            study.tell(trial.number, state=TrialState.PRUNED)
            continue
        if done is not None and done.value is not None and math.isfinite(done.value):
            study.tell(trial.number, done.value)
            continue
        if trial.number not in queued:
            study.enqueue_trial(trial.params, user_attrs={REQUEUED_FROM: trial.number})
        study.tell(trial.number, state=TrialState.FAIL)
        n += 1
    return n


def _counted(study: optuna.Study) -> int:
    """Trials that used up budget: every asked trial except those re-queued after a dead driver."""
    trials = study.get_trials(deepcopy=False)
    requeued = {t.user_attrs[REQUEUED_FROM] for t in trials if REQUEUED_FROM in t.user_attrs}
    return sum(1 for t in trials if t.state != TrialState.WAITING and t.number not in requeued)


def _trial_value(trial: optuna.trial.FrozenTrial) -> float:
    if trial.value is not None:
        return float(trial.value)
    return max(trial.intermediate_values.values())
