"""What a killed driver left behind, put straight before a study continues.

The MLflow store is the record of which trials are done: a child run of the study that ended
FINISHED (or FAILED for a reason other than a retried crash) is a result, keyed by its
`segstudy.trial_key`. A run still RUNNING belonged to a trial the dead driver was watching; a run
KILLED belonged to a trial a stopped driver cut (docs/ARCHITECTURE.md 3, "Stopping"). For both:

- if Optuna already recorded the trial's outcome (the searcher is told before MLflow), the run
  is closed with that outcome and tagged `segstudy.recovered`;
- otherwise the trial was interrupted: its run is marked KILLED and deleted (so no trial shows
  twice), and the trial runs again.

A FINISHED run is a result even where Optuna holds its trial RUNNING: the worker ends the run, then
the driver tells Optuna, and a stop between the two (a full disk under the Optuna database) cuts the
telling. `Reconciled.results` carries those runs, and the tune phase tells Optuna their outcome
instead of running the trial again (`study.run.tune.searcher.finished_in_mlflow`).

A run FAILED by a fault of the machine (`segstudy.fault=machine`: a killed worker, a lost node, a
full disk), or any FAILED run when the user asks for it (`segstudy resume --retry-failed`), is
not a result either: it is tagged `segstudy.retried`, kept as the record of a failed attempt, and
its trial runs again (a tune trial is queued again in Optuna with its parameters first, through
`retry`, so a kill between the two steps neither loses nor doubles it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from mlflow.entities import Run

from study import metrics_names as M
from study.tracking import StudyTracker
from study.tracking.outbox import is_unavailable

log = logging.getLogger(__name__)

OutcomeOf = Callable[[str], str | None]  # trial key -> Optuna state name, or None
Retry = Callable[[str], bool]  # trial key -> whether it will run again (a tune trial: queued again in Optuna)


@dataclass
class Reconciled:
    """Trial keys already done (FINISHED or FAILED for good), and what was cleaned up."""

    finished: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    # The FINISHED runs by trial key: a tune trial's result, for an Optuna record the stop cut short
    # (the worker ends its run, the driver then tells Optuna; a full disk can fail the telling).
    results: dict[str, Run] = field(default_factory=dict)
    interrupted: int = 0
    recovered: int = 0
    retried: int = 0  # failed runs whose trials run again (a fault of the machine, or --retry-failed)

    @property
    def done(self) -> set[str]:
        return self.finished | self.failed


def study_trial_runs(tracker: StudyTracker, study_run_id: str) -> list[Run]:
    """Every active child run of the study run, all pages."""
    return tracker.search_runs(f"tags.`{M.PARENT_TAG}` = '{study_run_id}'")


def reconcile(
    tracker: StudyTracker, study_run_id: str, *, outcome_of: OutcomeOf, retry: Retry = lambda key: True,
    retry_failed: bool = False,
) -> Reconciled:
    """Close the runs a dead driver left RUNNING, remove those a stopped one closed KILLED, mark
    the failed runs whose trials run again, and return the keys of trials already done.

    Args:
        outcome_of: a tune trial's state in Optuna (confirm trials have none).
        retry: asked for each failed trial that is to run again; False keeps it failed (a tune
            trial of a phase that has ended, or one Optuna does not hold as failed).
        retry_failed: run every failed trial again, not only those the machine failed.
    """
    state = Reconciled()
    again: list[Run] = []
    for run in study_trial_runs(tracker, study_run_id):
        key = run.data.tags.get(M.TRIAL_KEY_TAG)
        if key is None:
            continue
        status = run.info.status
        if status in {"RUNNING", "KILLED"}:
            outcome = outcome_of(key)
            run_id = run.info.run_id
            if outcome in {"COMPLETE", "PRUNED"}:
                tracker.set_tags(run_id, {M.RECOVERED_TAG: "true", M.STOPPED_EARLY_TAG: str(outcome == "PRUNED").lower()})
                tracker.finish(run_id)
                state.finished.add(key)
                state.recovered += 1
            elif outcome == "FAIL":
                tracker.set_tags(run_id, {M.RECOVERED_TAG: "true"})
                tracker.finish(run_id, failed_reason="trial failed; its error text was lost when the driver stopped")
                state.failed.add(key)
                state.recovered += 1
            else:
                tracker.set_tags(run_id, {M.ERROR_TAG: "interrupted: the study driver stopped; resume ran the trial again"})
                tracker.finish(run_id, status="KILLED")
                tracker.delete_run(run_id)
                state.interrupted += 1
        elif status == "FINISHED":
            state.finished.add(key)
            state.results[key] = run
        elif status == "FAILED" and run.data.tags.get(M.RETRIED_TAG) != "true":
            if retry_failed or run.data.tags.get(M.FAULT_TAG) == M.FAULT_MACHINE:
                again.append(run)
            else:
                state.failed.add(key)
    for run in again:
        key = run.data.tags[M.TRIAL_KEY_TAG]
        if key in state.finished:
            continue
        if retry(key):
            tracker.set_tags(run.info.run_id, {M.RETRIED_TAG: "true"})  # after the retry is queued: see the docstring
            state.retried += 1
        else:
            state.failed.add(key)
    state.failed -= state.finished  # a retried key that later succeeded is finished
    if state.interrupted or state.recovered or state.retried:
        log.warning("resume: %d interrupted trial run(s) removed, %d closed from the Optuna record, %d failed trial(s) to "
                    "run again", state.interrupted, state.recovered, state.retried)
    return state


def lost_to_faults(tracker: StudyTracker, study_run_id: str, confirm_keys: set[str]) -> tuple[int, set[str]]:
    """What keeps a study from being finished, read back at its end: how many trials failed by a
    fault of the machine and are not yet run again, and which of `confirm_keys` (every cell x
    seed due) have no FINISHED run. A store that is away (writes waiting in the outbox) cannot
    say: (0, none), and the trials the driver saw fail keep the study from FINISHED."""
    lost, finished = set(), set()
    try:
        if tracker.deliver() > 0:
            return 0, set()
        runs = study_trial_runs(tracker, study_run_id)
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        return 0, set()
    for run in runs:
        tags = run.data.tags
        if run.info.status == "FINISHED":
            finished.add(tags.get(M.TRIAL_KEY_TAG))
        elif run.info.status == "FAILED" and tags.get(M.FAULT_TAG) == M.FAULT_MACHINE and tags.get(M.RETRIED_TAG) != "true":
            lost.add(tags.get(M.TRIAL_KEY_TAG))
    return len(lost - finished), confirm_keys - finished


__all__ = ["Reconciled", "lost_to_faults", "reconcile", "study_trial_runs"]
