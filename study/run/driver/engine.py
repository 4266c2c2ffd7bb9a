"""Run a whole study: validate, connect to Ray, build data once, run every cell x seed, track.

The order matters for the "nothing started on bad input" promise: the spec is validated and the
cluster's resources are checked before MLflow sees a run or Tune sees a trial.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import sqlite3
import os
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray import tune
from sqlalchemy.exc import SQLAlchemyError

from study import metrics_names as M
from study import process_state
from study.spec.cells import cell_key, expand_cells
from study.errors import SegstudyError, first_line
from study.paths import output_folder
from study.redact import mask_uri
from study.run.driver.preflight import Preflight, plan_line, preflight
from study.run.cluster.ray_reaper import reap_on_exit
from study.run.record.reconcile import reconcile, study_trial_runs
from study.spec import StudySpec, check_data, check_grid_size, load_spec
from study.training.study_data import build_study_data, summarise_data
from study.run.record.study_dir import OPTUNA_DB, StudyDir
from study.tracking import StudyTracker, resolve_tracking_uri
from study.run.tune.trainable import train_trial
from study.training import TrialPlan
from study.training.plan import optuna_trial_of, trial_key
from study.run.tune.tune_callback import TrackingCallback
from study.run.tune.tune_report import LastResultFile
from study.run.tune.scheduler import PerCellScheduler
from study.run.tune.searcher import CellSearcher
from study.run.record.gpu_summary import log_study_gpu
from study.run.cluster.warm_workers import local_ray_config
from study.run.display.console import Display, StudyConsole, stopping_line
from study.run.tune.stopping import PhaseStopper
from study.run.driver.rounds import ConfirmScores, ScoresCallback, announce, confirm_rounds, restore
from study.run.display.library_log import library_output
from study.process_state import route_ray_worker_output

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudyResult:
    """What a finished study left behind, and where."""

    experiment: str
    study_run_id: str
    tracking_uri: str
    storage_path: Path
    n_trials: int
    n_failed: int
    pending_writes: int = 0  # tracking writes still in the outbox (server away at the end)
    not_learned: tuple[str, ...] = ()  # "cell seed=S: reason" of confirm trials the learning gate failed
    log_file: Path | None = None  # what Ray, Tune and MLflow said (study folder/segstudy.log)

    @property
    def ok(self) -> bool:
        return self.n_failed == 0 and self.pending_writes == 0


def run_study(
    spec_path: str | Path,
    *,
    address: str | None = None,
    tracking_uri: str | None = None,
    storage: str | Path | None = None,
    console: StudyConsole | None = None,
    verbose: bool = False,
    allow_large_grid: bool = False,
) -> StudyResult:
    """Run the study described by the spec file and return where its results are.

    Args:
        spec_path: YAML study spec.
        address: Ray cluster to join ("auto", "ray://...", "HOST:PORT"); None starts Ray here.
        tracking_uri: MLflow tracking URI; default MLFLOW_TRACKING_URI, the spec's, or ./mlflow.db.
        storage: directory for study folders (spec copy, Optuna storage, Tune results; default
            ./ray_results).
        console: where progress goes (default: live on a terminal, plain lines otherwise).
        verbose: keep Tune's own reporter and library output on the console instead of the
            study's log file.
        allow_large_grid: run a grid of more trials than the spec's max_trials (default 1000).

    Raises:
        SegstudyError: bad spec, paths or grid size, or a resource request the cluster cannot
            meet (nothing started, no store or folder created).
        process_state.Interrupted: SIGINT or SIGTERM stopped the study (called in the main thread):
            its run is KILLED and tagged interrupted, `resume_study` continues it.
    """
    spec_path = Path(spec_path)
    spec = load_spec(spec_path)
    check_grid_size(spec, allow_large=allow_large_grid)
    check_data(spec)
    uri = resolve_tracking_uri(tracking_uri, spec.tracking.uri)
    storage_path = _storage(output_folder(Path(storage or "ray_results"), option="--storage"))
    with process_state.stop_on_signals(), library_output(verbose) as library_log:  # docs/ARCHITECTURE.md 3, "Stopping"
        tracker = StudyTracker(uri, spec.name)
        tracker.check_reachable()
        return _on_ray(
            address, spec, tracker,
            lambda: StudyDir.create(storage_path, name=spec.name, spec_file=spec_path, tracking_uri=uri),
            display=Display.of(console, verbose=verbose, library_log=library_log),
        )


def prepared_data(spec: StudySpec) -> tuple[Any, Preflight]:
    """The study's data, built once, after one training step per network input passed on it
    (`study.run.driver.preflight`): a deterministic failure is a one-line error before Ray starts.
    Returns the data and the preflight's record (its step times give the study's estimate)."""
    t0 = time.perf_counter()
    data = build_study_data(spec)
    log.info("built data for %d level(s) in %.1f s", len(data), time.perf_counter() - t0)
    return data, preflight(spec, data)


def resume_study(
    name_or_dir: str | Path,
    *,
    address: str | None = None,
    tracking_uri: str | None = None,
    storage: str | Path | None = None,
    console: StudyConsole | None = None,
    verbose: bool = False,
) -> StudyResult:
    """Continue a study whose driver died or was stopped: finished trials are kept, the rest run.

    Args:
        name_or_dir: the study folder, or the study name (newest folder of that name in storage).
        tracking_uri: where the study's runs are; default the one it was started with.
        console, verbose: as for `run_study`.
    """
    study = StudyDir.find(name_or_dir, storage=_storage(storage))
    with process_state.stop_on_signals():  # docs/ARCHITECTURE.md 3, "Stopping"
        process_state.name_stopped_study(resume_name(study.path))
        with study.driving(), library_output(verbose) as library_log:  # before anything is delivered or started
            spec = load_spec(study.spec_file)
            check_data(spec)
            tracker = StudyTracker(resolve_tracking_uri(tracking_uri or study.manifest["tracking_uri"], None), spec.name)
            tracker.check_reachable()
            tracker.use_outbox(study.outbox)
            if tracker.deliver() > 0:
                raise SegstudyError(f"{study.outbox}: kept tracking writes could not be delivered to {tracker.uri}")
            display = Display.of(console, verbose=verbose, library_log=library_log)
            return _on_ray(address, spec, tracker, lambda: study, display=display, locked=True)


def _on_ray(
    address: str | None,
    spec: StudySpec,
    tracker: StudyTracker,
    study_dir: Callable[[], StudyDir],
    *,
    display: Display,
    locked: bool = False,
) -> StudyResult:
    """Connect to Ray, refuse what the cluster cannot hold, build the data and pass the preflight,
    then drive the study. The folder is only made (`study_dir`) once all that passed: bad input
    leaves nothing behind. Ray starts first so its idle workers import the trainable while the
    data are built. `locked`: the caller already holds the study's driver lock."""
    process_state.quiet_artifact_downloads()  # a progress bar per logged model otherwise
    log = display.library_log
    started_ray, undo_workers = False, lambda: None
    try:
        started_ray = connect_ray(address, trials_at_once=local_trials_at_once(spec))
        undo_workers = route_ray_worker_output(log) if log is not None else undo_workers
        with process_state.defer_stop():  # Ray's calls take a signal's exception badly (SystemError)
            check_resources(spec)
        data, checked = prepared_data(spec)
        display.console.note(plan_line(spec, data, checked, at_once=cluster_capacity(spec), where="on this Ray cluster"))
        with process_state.defer_stop():  # a folder is made whole, and then it is what resume continues
            study = study_dir()
            process_state.name_stopped_study(resume_name(study.path))
        if log is not None:
            log.move_to(study.path)
        with contextlib.nullcontext() if locked else study.driving():  # one live driver per study
            return _drive(spec, study, tracker, data, display)
    finally:
        with process_state.defer_stop():  # a stop during the clean-up still puts Ray away
            display.console.close()
            if started_ray:
                ray.shutdown()
            undo_workers()


def resume_name(folder: Path) -> str:
    """What `segstudy resume` is given to continue the study in `folder`: its path, relative to
    the working directory when inside it (a name alone would need the same --storage)."""
    try:
        return str(folder.relative_to(Path.cwd()))
    except ValueError:
        return str(folder)


def sync_study(name_or_dir: str | Path, *, storage: str | Path | None = None, tracking_uri: str | None = None) -> tuple[int, int]:
    """Deliver a study's kept tracking writes; returns (delivered, still waiting)."""
    study = StudyDir.find(name_or_dir, storage=_storage(storage))
    with study.driving():  # a live driver delivers its own outbox; two deliverers would double writes
        tracker = StudyTracker(resolve_tracking_uri(tracking_uri or study.manifest["tracking_uri"], None), study.manifest["name"])
        tracker.use_outbox(study.outbox)
        before = len(tracker.outbox or [])
        tracker.check_reachable()
        left = tracker.deliver()
        return before - left, left


def _storage(storage: str | Path | None) -> Path:
    return Path(storage or "ray_results").resolve()


def connect_ray(address: str | None, *, trials_at_once: int = 1) -> bool:
    """Join `address` or start a local Ray whose idle workers preload the trainable (see
    study.run.cluster.warm_workers); returns True when this call started it.

    Without an address Ray is always started here (`address="local"`): a bare `ray.init()` joins
    whatever cluster a `ray start` left on this machine (/tmp/ray/ray_current_cluster) or
    RAY_ADDRESS names, and the study would run there with that cluster's code and resources.
    """
    process_state.let_tune_use_prestarted_workers()
    if ray.is_initialized():
        return False
    kwargs = {"logging_level": logging.WARNING, "log_to_driver": True}
    with process_state.defer_stop():  # a Ray cut half-way through its start would outlive the driver
        if address:
            try:
                ray.init(address=address, **kwargs)
            except (ConnectionError, ValueError, RuntimeError) as exc:  # nothing there, or not a Ray address
                raise SegstudyError(f"--address {mask_uri(address)}: cannot join a Ray cluster ({first_line(exc)})") from None
        else:
            ray.init(
                address="local",
                num_cpus=os.cpu_count() or 1,
                include_dashboard=False,
                _system_config=local_ray_config(trials_at_once),
                **kwargs,
            )
            reap_on_exit()  # a SIGKILLed driver must not leave Ray's agents running
    return True


def local_trials_at_once(spec: StudySpec) -> int:
    """How many trials a Ray started on this machine runs at once (CPU-bound; before Ray knows its GPUs)."""
    fits = trials_that_fit(spec, cpus=os.cpu_count() or 1, gpus=None)
    if spec.tuning is not None and spec.tuning.max_concurrent:
        fits = min(fits, spec.tuning.max_concurrent)
    return max(1, fits)


def check_resources(spec: StudySpec) -> None:
    """A trial that asks for more than any node has would wait forever: refuse it up front."""
    want = {"CPU": spec.resources.cpu, "GPU": spec.resources.gpu}
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    for kind, amount in want.items():
        if amount <= 0:
            continue
        best = max((res.get(kind, 0.0) for res in nodes), default=0.0)
        if best < amount:
            raise SegstudyError(
                f"resources.{kind.lower()}: {amount:g} per trial requested, but the largest node of this "
                f"Ray cluster has {best:g} {kind}; lower resources.{kind.lower()} or use a bigger cluster"
            )


def _drive(spec: StudySpec, study: StudyDir, tracker: StudyTracker, data: Any, display: Display) -> StudyResult:
    """Run what is left of the study in `study` (everything, for a new one)."""
    tracker.use_outbox(study.outbox)
    cells = expand_cells(spec)
    first_seeds = spec.confirm.budget.min if spec.confirm.budget is not None else len(spec.confirm_seeds)
    if first_seeds < M.MIN_SEEDS:
        warnings.warn(
            f"{spec.name}: {first_seeds} confirmation seed(s); comparisons between arms need "
            f">= {M.MIN_SEEDS} (set confirm.seeds)",
            stacklevel=3,
        )
    with process_state.defer_stop():  # the study run is made and recorded whole
        study_run = _study_run(spec, study, tracker, cells, data)
    n_trials = n_failed = 0
    status = "FAILED"
    try:
        searcher = _searcher(spec, cells, study) if spec.tuning is not None else None
        done = reconcile(tracker, study_run, outcome_of=lambda key: _optuna_outcome(searcher, key))
        trainable = tune.with_resources(
            tune.with_parameters(train_trial, spec=spec, data=data),
            {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu},
        )
        n_trials, n_failed = len(done.done), len(done.failed)
        chosen: dict[str, dict[str, Any]] = {cell_key(c): {} for c in cells}
        if searcher is not None:
            chosen = study.manifest.get("chosen")
            if chosen is None:
                chosen, tuned, failed = _tune_phase(spec, searcher, trainable, tracker, study, display)
                n_trials, n_failed = n_trials + tuned, n_failed + failed
                _log_chosen(tracker, study_run, chosen)
                study.update(chosen=chosen)
        confirm = functools.partial(_confirm_fit, spec, trainable, tracker=tracker, study=study, display=display)
        stalled = False
        if spec.confirm.budget is not None:  # rounds until every comparison is resolved (study/run/driver/rounds.py)
            store = ConfirmScores(study.path)
            outcome = confirm_rounds(
                spec, cells, chosen, restore(store, done, tracker=tracker, study_run=study_run), store=store,
                slots=cluster_capacity(spec),
                fit=lambda todo, stage, open_: confirm(todo, before=[ScoresCallback(store, spec)], stage=stage, open_comparisons=open_),
                announce=lambda state: announce(state, tracker=tracker, study_run=study_run, console=display.console),
            )
            n_trials, n_failed, stalled = n_trials + outcome.completed, n_failed + outcome.failed, outcome.stalled
        else:
            todo = [
                TrialPlan.config(cell, seed=seed, phase=M.PHASE_CONFIRM, hparams=chosen[cell_key(cell)])["trial"]
                for cell in cells
                if cell_key(cell) in chosen
                for seed in spec.confirm_seeds
                if trial_key(M.PHASE_CONFIRM, cell_key(cell), seed=seed) not in done.done
            ]
            if todo:
                ran, lost = confirm(todo)
                n_trials, n_failed = n_trials + ran, n_failed + lost
        missing = len(cells) - len(chosen)
        status = "FINISHED" if n_failed == 0 and missing == 0 and not stalled else "FAILED"
        tracker.set_tags(study_run, {"segstudy.n_trials": str(n_trials), "segstudy.n_failed": str(n_failed)})
    except process_state.Interrupted:
        status = "KILLED"
        raise
    finally:
        with process_state.defer_stop():  # closed whole, even when a stop comes now
            pending = _close_study_run(tracker, study_run, status=status, study=study)
    return StudyResult(
        experiment=spec.name,
        study_run_id=tracker.real_id(study_run),
        tracking_uri=tracker.uri,
        storage_path=study.path,
        n_trials=n_trials,
        n_failed=n_failed,
        pending_writes=pending,
        not_learned=() if pending else not_learned(tracker, tracker.real_id(study_run)),
        log_file=display.library_log.path if display.library_log is not None else None,
    )


def _confirm_fit(
    spec: StudySpec, trainable: Any, todo: list[dict[str, Any]], *, tracker: StudyTracker, study: StudyDir,
    display: Display, before: Sequence[tune.Callback] = (), stage: str = "", open_comparisons: Sequence[str] = (),
) -> tuple[int, int]:
    """Run confirm trials `todo` (the whole phase, or one round of it) as one grid; returns (trials
    ended, trials failed). `before`: callbacks that see each trial ahead of its MLflow run closing."""
    callback = TrackingCallback(tracker, spec, full_epochs=spec.training.epochs)
    totals = Counter(cell_key(trial["cell"]) for trial in todo)
    watch = display.watch(spec, M.PHASE_CONFIRM, totals, full_epochs=spec.training.epochs, stage=stage, open_comparisons=open_comparisons)
    _fit(
        spec,
        trainable,
        display=display,
        path=study.path,
        name=study.next_attempt("confirm"),
        callbacks=[*before, callback, watch],
        param_space={"trial": tune.grid_search(todo)},
    )
    return callback.completed, callback.failed


def _close_study_run(tracker: StudyTracker, study_run: str, *, status: str, study: StudyDir) -> int:
    """End the study run as FINISHED, FAILED or KILLED (stopped: tagged interrupted, never
    FINISHED; docs/ARCHITECTURE.md 3, "Stopping") and deliver the outbox; returns the writes
    still waiting for the server."""
    log_study_gpu(tracker, tracker.real_id(study_run))  # CUDA trials only: the study-wide utilisation
    if status == "KILLED":
        tracker.set_tags(study_run, {M.STATE_TAG: M.STATE_INTERRUPTED,
                                     M.STOP_SIGNAL_TAG: process_state.stop_signal_name() or "?"})
        tracker.finish(study_run, status="KILLED")
    else:
        tracker.set_tags(study_run, {M.STATE_TAG: status.lower()})
        tracker.finish(study_run, failed_reason=None if status == "FINISHED" else "some trials or cells failed")
    pending = tracker.deliver()
    if pending:
        warnings.warn(
            f"{pending} tracking write(s) could not reach {tracker.uri} and are kept in {study.outbox}; "
            f"run `segstudy sync {study.path}` when the server is back",
            stacklevel=3,
        )
    return pending


def not_learned(tracker: StudyTracker, study_run_id: str) -> tuple[str, ...]:
    """'cell seed=S: reason' of every finished confirm trial of the study that did not learn."""
    out = []
    for run in study_trial_runs(tracker, study_run_id):
        tags = run.data.tags
        if run.info.status == "FINISHED" and tags.get(M.LEARNED_TAG) == "false":
            out.append(f"{tags.get(M.CELL_TAG)} seed={tags.get(M.SEED_TAG)}: {tags.get(M.LEARNING_ISSUE_TAG, '?')}")
    return tuple(sorted(out))


def _study_run(spec: StudySpec, study: StudyDir, tracker: StudyTracker, cells: list[dict[str, Any]], data: Any) -> str:
    """The study's MLflow parent run: the one this folder already has, or a new one."""
    manifest = study.manifest
    run_id = manifest.get("study_run_id") or _find_study_run(tracker, study)
    if run_id is None:
        run_id = tracker.start_study(
            params={
                "spec_name": spec.name,
                "n_cells": len(cells),
                "seeds": spec.confirm.budget.model_dump() if spec.confirm.budget else spec.confirm_seeds,
                "factors": {k: list(v) for k, v in spec.factors.items()},
                "dataset": spec.data.dataset,
                # Every random choice of the study, so a run can be repeated exactly.
                "data_seed": spec.data.seed,
                "perturbation_seed": spec.evaluation.perturbation_seed,
                "tuning_seed": spec.tuning.seed if spec.tuning else None,
            },
            tags={
                M.FACTORS_TAG: json.dumps(sorted(spec.factors)),
                "segstudy.cells": ";".join(map(cell_key, cells)),
                M.STUDY_DIR_TAG: str(study.path),
            },
            spec_file=study.spec_file,
            run_name=study.run_name,
        )
        study.update(study_run_id=run_id)
    else:
        run_id = tracker.real_id(run_id)
        tracker.reopen(run_id)  # a resumed study is running again
        tracker.set_tags(run_id, {M.STATE_TAG: "running"})
    tracker.study_run_id = run_id
    if not manifest.get("data_summary_logged"):
        with tempfile.TemporaryDirectory(prefix="segstudy-") as tmp:
            summary = Path(tmp) / "data_summary.csv"
            summarise_data(spec, data).to_csv(summary, index=False)
            tracker.log_file(run_id, summary)
        study.update(data_summary_logged=True)
    return run_id


def _find_study_run(tracker: StudyTracker, study: StudyDir) -> str | None:
    # The driver may have died between creating the run and recording it in study.json.
    runs = tracker.search_runs(f"tags.`{M.STUDY_DIR_TAG}` = '{study.path}'", max_results=1)
    return runs[0].info.run_id if runs else None


def _searcher(spec: StudySpec, cells: list[dict[str, Any]], study: StudyDir) -> CellSearcher:
    tuning = spec.tuning
    assert tuning is not None
    study.update(tune_started=True)  # from now on optuna.db is part of the study (checked on resume)
    try:
        return _cell_searcher(spec, cells, study, tuning)
    except (SQLAlchemyError, sqlite3.DatabaseError) as exc:
        raise SegstudyError(f"{study.path / OPTUNA_DB}: not a readable Optuna storage ({type(exc).__name__}); "
                            "restore it, or start the study anew with segstudy run") from None


def _cell_searcher(spec: StudySpec, cells: list[dict[str, Any]], study: StudyDir, tuning: Any) -> CellSearcher:
    return CellSearcher(
        cells=cells,
        space=spec.search_space,
        trials_per_cell=tuning.trials_per_cell,
        storage=f"sqlite:///{study.path / OPTUNA_DB}",
        prefix=spec.name,
        sampler=tuning.sampler,
        seed=tuning.seed,
        trial_seed=tuning.seed,
        metric=spec.objective,
        max_t=tuning.early_stopping.max_t or spec.training.epochs,
        epoch_key=M.EPOCH,
    )


def _optuna_outcome(searcher: CellSearcher | None, key: str) -> str | None:
    trial = optuna_trial_of(key)
    return None if searcher is None or trial is None else searcher.state_of(*trial)


def _tune_phase(
    spec: StudySpec, searcher: CellSearcher, trainable: Any, tracker: StudyTracker, study: StudyDir, display: Display
) -> tuple[dict[str, dict[str, Any]], int, int]:
    """Per-cell Optuna search with per-cell early stopping; returns (chosen per cell, trials
    ended, trials failed) for the trials this driver ran.

    On resume, trials the dead driver left running are re-queued with their parameters and only
    the budget not yet spent is run.
    """
    tuning = spec.tuning
    assert tuning is not None
    stopping = tuning.early_stopping
    max_t = stopping.max_t or spec.training.epochs
    searcher.requeue_interrupted()
    remaining = searcher.remaining()
    if not remaining:
        return searcher.best(), 0, 0
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
    callback = TrackingCallback(tracker, spec, full_epochs=max_t)
    _fit(
        spec,
        trainable,
        display=display,
        path=study.path,
        name=study.next_attempt("tune"),
        callbacks=[callback, display.watch(spec, M.PHASE_TUNE, searcher.remaining_per_cell(), full_epochs=max_t)],
        search_alg=searcher,
        scheduler=scheduler,
        num_samples=remaining,
        max_concurrent=tuning.max_concurrent,
        max_epochs=max_t,
    )
    return searcher.best(), callback.completed, callback.failed


def _fit(
    spec: StudySpec,
    trainable: Any,
    *,
    display: Display,
    path: Path,
    name: str,
    callbacks: list[tune.Callback],
    param_space: dict[str, Any] | None = None,
    search_alg: Any = None,
    scheduler: Any = None,
    num_samples: int = 1,
    max_concurrent: int | None = None,
    max_epochs: int | None = None,
) -> None:
    """One phase as one `Tuner.fit`; what Tune prints goes to the study log unless --verbose.

    A stop signal during the phase ends it at Tune's next step (`PhaseStopper`) and is raised as
    `process_state.Interrupted` when the fit returns, so no later phase starts and nothing the
    caller writes after a finished phase (the chosen hyperparameters) is written.
    """
    process_state.quiet_tune_loggers()
    console = display.console
    stopper = PhaseStopper(epoch_key=M.EPOCH, max_epochs=max_epochs, note=lambda signal: console.note(stopping_line(signal)))
    with process_state.defer_stop():  # the phase ends through `stopper`; Ray's calls take a signal's exception badly
        tuner = tune.Tuner(
            trainable,
            param_space=param_space or {},
            tune_config=tune.TuneConfig(
                search_alg=search_alg,
                scheduler=scheduler,
                num_samples=num_samples,
                max_concurrent_trials=max_concurrent or cluster_capacity(spec),
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=str(path),
                callbacks=[*callbacks, LastResultFile()],
                stop=stopper,
                verbose=1 if display.verbose else 0,  # segstudy's console shows progress; --verbose brings Tune's back
                # A crashed or killed worker is retried; deterministic failures are not (TrialFailure).
                failure_config=tune.FailureConfig(max_failures=spec.resources.max_failures),
            ),
        )
        # Created above with the real stdout: the Tuner pickles its callbacks, and a redirected stream would not pickle.
        with process_state.tune_prints_to(display.library_log):
            tuner.fit()


def cluster_capacity(spec: StudySpec) -> int:
    """How many trials of this size fit on the cluster at once (keeps every CPU/GPU busy)."""
    total = ray.cluster_resources()
    return trials_that_fit(spec, cpus=total.get("CPU", 0), gpus=total.get("GPU", 0))


def trials_that_fit(spec: StudySpec, *, cpus: float, gpus: float | None) -> int:
    """How many trials of the spec's size fit in `cpus` and `gpus` (None: not known yet; at least one)."""
    fits = [int(cpus // spec.resources.cpu)]
    if spec.resources.gpu > 0 and gpus is not None:
        fits.append(int(gpus // spec.resources.gpu))
    return max(1, min(fits))


def _log_chosen(tracker: StudyTracker, run_id: str, chosen: dict[str, dict[str, Any]]) -> None:
    with tempfile.TemporaryDirectory(prefix="segstudy-") as tmp:
        path = Path(tmp) / "chosen_hyperparameters.json"
        path.write_text(json.dumps(chosen, indent=2, sort_keys=True))
        tracker.log_file(run_id, path)
    tracker.set_tags(run_id, {M.CHOSEN_TAG: json.dumps(chosen, sort_keys=True)[:5000]})


__all__ = ["StudyResult", "check_resources", "cluster_capacity", "connect_ray", "resume_study", "run_study", "sync_study"]
