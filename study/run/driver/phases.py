"""The study's two phases on Tune: the per-cell search of the tune phase, and confirm trials run as one grid."""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ray import tune
from sqlalchemy.exc import SQLAlchemyError

from study import metrics_names as M
from study.errors import SegstudyError
from study.redact import mask_uri
from study.run.display.console import Display
from study.run.driver.fit import fit
from study.run.record.study_dir import OPTUNA_DB, StudyDir
from study.run.tune.scheduler import PerCellScheduler
from study.run.tune.searcher import CellSearcher, finished_in_mlflow
from study.run.tune.tune_callback import TrackingCallback
from study.spec import StudySpec
from study.spec.cells import cell_key
from study.tracking import StudyTracker
from study.training.plan import optuna_trial_of


def open_searcher(spec: StudySpec, cells: list[dict[str, Any]], study: StudyDir) -> CellSearcher:
    """The tune phase's per-cell searcher on the study folder's Optuna storage (new or resumed)."""
    tuning = spec.tuning
    assert tuning is not None
    study.update(tune_started=True)  # from now on its Optuna storage is part of the study (checked on resume)
    storage, prefix = study.optuna_storage(spec.name)  # optuna.db in the folder; the state database for a bucket
    try:
        return _cell_searcher(spec, cells, storage, prefix, tuning)
    except (SQLAlchemyError, sqlite3.DatabaseError) as exc:
        where = study.where(OPTUNA_DB) if storage.startswith("sqlite:") else f"state database {mask_uri(storage)}"
        raise SegstudyError(f"{where}: not a readable Optuna storage ({type(exc).__name__}); "
                            "restore it, or start the study anew with segstudy run") from None


def _cell_searcher(spec: StudySpec, cells: list[dict[str, Any]], storage: str, prefix: str, tuning: Any) -> CellSearcher:
    return CellSearcher(
        cells=cells,
        space=spec.search_space,
        trials_per_cell=tuning.trials_per_cell,
        storage=storage,
        prefix=prefix,
        sampler=tuning.sampler,
        seed=tuning.seed,
        trial_seed=tuning.seed,
        metric=spec.objective,
        max_t=tuning.early_stopping.max_t or spec.training.epochs,
        epoch_key=M.EPOCH,
    )


def optuna_outcome(searcher: CellSearcher | None, key: str) -> str | None:
    trial = optuna_trial_of(key)
    return None if searcher is None or trial is None else searcher.state_of(*trial)


def retry_trial(searcher: CellSearcher | None, study: StudyDir, key: str) -> bool:
    """Whether a failed trial runs again on resume (`study.run.record.reconcile`): a confirm trial
    always (it is due until it has a finished run); a tune trial only while its phase is open,
    queued again in Optuna with its parameters (once the phase ended, its choice is made)."""
    trial = optuna_trial_of(key)
    if trial is None:
        return True
    if searcher is None or "chosen" in study.manifest:
        return False
    return searcher.requeue_failed(*trial)


def tune_phase(
    spec: StudySpec, searcher: CellSearcher, trainable: Any, tracker: StudyTracker, study: StudyDir, display: Display,
    finished: Mapping[str, Any] | None = None,
) -> tuple[dict[str, dict[str, Any]], int, int, int]:
    """Per-cell Optuna search with per-cell early stopping; returns (chosen per cell, trials
    ended, trials failed, of them failed by a fault of the machine) for the trials this driver
    ran. With such a trial the phase is not over: resume runs it again before anything is chosen.

    On resume, trials the dead driver left running are re-queued with their parameters and only
    the budget not yet spent is run; one whose MLflow run FINISHED (`finished`: trial key -> run,
    from `reconcile`) ran to its end and is told its outcome instead.
    """
    tuning = spec.tuning
    assert tuning is not None
    stopping = tuning.early_stopping
    max_t = stopping.max_t or spec.training.epochs
    searcher.requeue_interrupted(finished_in_mlflow(finished or {}, spec.objective))
    remaining = searcher.remaining()
    if not remaining:
        return searcher.best(), 0, 0, 0
    scheduler = None
    if stopping.kind == "asha":
        scheduler = PerCellScheduler(
            cell_of=lambda config: cell_key(config["trial"]["cell"]),
            metric=spec.objective,
            time_attr=M.EPOCH,
            max_t=max_t,
            grace_period=stopping.grace_period,
            reduction_factor=stopping.reduction_factor,
        )
    callback = TrackingCallback(tracker, spec, full_epochs=max_t, folder=study.path)
    fit(
        spec,
        trainable,
        display=display,
        study=study,
        name=study.next_attempt("tune"),
        callbacks=[callback, display.watch(spec, M.PHASE_TUNE, searcher.remaining_per_cell(), full_epochs=max_t)],
        search_alg=searcher,
        scheduler=scheduler,
        num_samples=remaining,
        max_concurrent=tuning.max_concurrent,
        max_epochs=max_t,
    )
    return searcher.best(), callback.completed, callback.failed, callback.lost


def confirm_fit(
    spec: StudySpec, trainable: Any, todo: list[dict[str, Any]], *, tracker: StudyTracker, study: StudyDir,
    display: Display, before: Sequence[tune.Callback] = (), stage: str = "", open_claims: Sequence[str] = (),
    cost: Callable[[Mapping[str, Any], Mapping[str, Any]], float] | None = None,
) -> tuple[int, int]:
    """Run confirm trials `todo` (the whole phase, or one round of it) as one grid; returns (trials
    ended, trials failed). `before`: callbacks that see each trial ahead of its MLflow run closing.

    `cost(cell, hparams)`: a trial's estimated seconds (`preflight.trial_seconds`). The longest
    trials start first, so a phase or round does not end on one long trial while the other slots
    idle (longest processing time first; Graham, SIAM J. Appl. Math. 1969). Each trial's numbers
    do not depend on the order."""
    if cost is not None:
        todo = sorted(todo, key=lambda trial: -cost(trial["cell"], trial["hparams"]))  # stable: ties keep their order
    callback = TrackingCallback(tracker, spec, full_epochs=spec.training.epochs, folder=study.path)
    totals = Counter(cell_key(trial["cell"]) for trial in todo)
    watch = display.watch(spec, M.PHASE_CONFIRM, totals, full_epochs=spec.training.epochs, stage=stage, open_claims=open_claims)
    fit(
        spec,
        trainable,
        display=display,
        study=study,
        name=study.next_attempt("confirm"),
        callbacks=[*before, callback, watch],
        param_space={"trial": tune.grid_search(todo)},
    )
    return callback.completed, callback.failed


__all__ = ["confirm_fit", "open_searcher", "optuna_outcome", "retry_trial", "tune_phase"]
