"""What a killed driver left behind, put straight before a study continues.

The MLflow store is the record of which trials are done: a child run of the study that ended
FINISHED (or FAILED for a reason other than a retried crash) is a result, keyed by its
`segstudy.trial_key`. A run still RUNNING belonged to a trial the dead driver was watching; a run
KILLED belonged to a trial a stopped driver cut (docs/ARCHITECTURE.md 3, "Stopping"). For both:

- if Optuna already recorded the trial's outcome (the searcher is told before MLflow), the run
  is closed with that outcome and tagged `segstudy.recovered`;
- otherwise the trial was interrupted: its run is marked KILLED and deleted (so no trial shows
  twice), and the trial runs again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from mlflow.entities import Run

from study import metrics_names as M
from study.tracking import StudyTracker

log = logging.getLogger(__name__)

OutcomeOf = Callable[[str], str | None]  # trial key -> Optuna state name, or None


@dataclass
class Reconciled:
    """Trial keys already done (FINISHED or FAILED for good), and what was cleaned up."""

    finished: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    interrupted: int = 0
    recovered: int = 0

    @property
    def done(self) -> set[str]:
        return self.finished | self.failed


def study_trial_runs(tracker: StudyTracker, study_run_id: str) -> list[Run]:
    """Every active child run of the study run, all pages."""
    return tracker.search_runs(f"tags.`{M.PARENT_TAG}` = '{study_run_id}'")


def reconcile(tracker: StudyTracker, study_run_id: str, *, outcome_of: OutcomeOf) -> Reconciled:
    """Close the runs a dead driver left RUNNING, remove those a stopped one closed KILLED, and
    return the keys of trials already done."""
    state = Reconciled()
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
        elif status == "FAILED" and run.data.tags.get(M.RETRIED_TAG) != "true":
            state.failed.add(key)
    state.failed -= state.finished  # a retried key that later succeeded is finished
    if state.interrupted or state.recovered:
        log.warning("resume: %d interrupted trial run(s) removed, %d closed from the Optuna record",
                    state.interrupted, state.recovered)
    return state


__all__ = ["Reconciled", "reconcile", "study_trial_runs"]
