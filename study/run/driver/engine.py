"""Run a whole study: validate, connect to Ray, build data once, run every cell x seed, track.

The order matters for the "nothing started on bad input" promise: the spec is validated and the
cluster's resources are checked before MLflow sees a run or Tune sees a trial. The phases
themselves are `study.run.driver.phases` (and `rounds` for a seed budget); the study's MLflow run
is `study.run.record.study_run`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray import tune

from study import disk, process_state
from study import metrics_names as M
from study.errors import SegstudyError
from study.process_state import route_ray_worker_output
from study.run.cluster.capacity import check_resources, cluster_capacity, local_trials_at_once
from study.run.cluster.connect import connect_ray
from study.run.display.console import Display, StudyConsole
from study.run.display.library_log import LOG_FILE, library_output
from study.run.driver.phases import confirm_fit, open_searcher, optuna_outcome, retry_trial, tune_phase
from study.run.driver.preflight import Preflight, plan_line, preflight, trial_seconds
from study.run.driver.replicate import plan_replicate
from study.run.driver.rounds import ConfirmScores, ScoresCallback, announce, confirm_rounds, restore
from study.run.driver.space import SpaceCheck, full_disk_stops, space_check
from study.run.record import bucket_copy
from study.run.record.bucket_study import create_study, find_study, study_root
from study.run.record.reconcile import lost_to_faults, reconcile
from study.run.record.study_dir import StudyDir
from study.storage.roots import storage_root
from study.run.record.study_run import close_study_run, log_chosen, not_learned, open_study_run
from study.run.tune.trainable import train_trial
from study.spec import StudySpec, check_data, check_grid_size, load_spec
from study.spec.cells import cell_key, expand_cells
from study.tracking import StudyTracker, resolve_tracking_uri
from study.training import TrialPlan
from study.training.plan import trial_key
from study.training.inputs.study_data import build_study_data

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudyResult:
    """What a finished study left behind, and where."""

    experiment: str
    study_run_id: str
    tracking_uri: str
    storage_path: Path  # the study folder here (for a study in a bucket, its local working copy)
    n_trials: int
    n_failed: int
    pending_writes: int = 0  # tracking writes still in the outbox (server away at the end)
    not_learned: tuple[str, ...] = ()  # "cell seed=S: reason" of confirm trials the learning gate failed
    log_file: Path | None = None  # what Ray, Tune and MLflow said (study folder/segstudy.log)
    lost: int = 0  # trials failed by a fault of the machine (in n_failed): `segstudy resume` runs them again
    unfinished: int = 0  # cell x seed confirm trials with no finished run (a failed or missing trial)
    folder: StudyDir | None = None  # the study folder, where it lives (`location`, `save`)

    @property
    def location(self) -> str:
        """Where the study is, as `segstudy resume` takes it: its folder, or its bucket URI."""
        return self.folder.location if self.folder is not None else str(self.storage_path)

    @property
    def ok(self) -> bool:
        return self.n_failed == 0 and self.pending_writes == 0 and self.unfinished == 0


def run_study(
    spec_path: str | Path,
    *,
    address: str | None = None,
    tracking_uri: str | None = None,
    storage: str | Path | None = None,
    state_db: str | None = None,
    console: StudyConsole | None = None,
    verbose: bool = False,
    allow_large_grid: bool = False,
) -> StudyResult:
    """Run the study described by the spec file and return where its results are.

    Args:
        spec_path: YAML study spec.
        address: Ray cluster to join ("auto", "ray://...", "HOST:PORT"); None starts Ray here.
        tracking_uri: MLflow tracking URI; default MLFLOW_TRACKING_URI, the spec's, or ./mlflow.db.
        storage: where study folders are made (spec copy, Optuna storage, Tune results): a local
            folder (default ./ray_results) or `s3://bucket/prefix` (`study.run.record.bucket_study`).
        state_db: the PostgreSQL database of a study in a bucket (its tuning state and driver
            lock; default SEGSTUDY_STATE_DB).
        console: where progress goes (default: live on a terminal, plain lines otherwise).
        verbose: keep Tune's own reporter and library output on the console instead of the
            study's log file.
        allow_large_grid: run a grid of more trials than the spec's max_trials (default 1000).

    Raises:
        SegstudyError: bad spec, paths or grid size, a bucket or state database that cannot be
            used, or a resource request the cluster cannot meet (nothing started, no store or
            folder created).
        study.disk.NoSpaceError: the disks the study writes to have less free space than it
            is estimated to write (`study.run.driver.space`).
        process_state.Interrupted: SIGINT, SIGTERM or SIGHUP stopped the study (called in the
            main thread), or a disk filled up: its run is KILLED and tagged interrupted,
            `resume_study` continues it.
    """
    spec_path = Path(spec_path)
    spec = load_spec(spec_path)
    check_grid_size(spec, allow_large=allow_large_grid)
    check_data(spec)
    uri = resolve_tracking_uri(tracking_uri, spec.tracking.uri)
    root, state_url = study_root(storage, state_db=state_db, tracking_uri=uri)  # before the tracking store exists
    with process_state.stop_on_signals(), library_output(verbose) as library_log:  # docs/ARCHITECTURE.md 3, "Stopping"
        tracker = StudyTracker(uri, spec.name)
        tracker.check_reachable()
        local = _local_disk(root)
        with full_disk_stops([local, tracker.local_store]):
            return _on_ray(
                address, spec, tracker,
                lambda: create_study(root, name=spec.name, spec_file=spec_path, tracking_uri=uri, state_db=state_url),
                display=Display.of(console, verbose=verbose, library_log=library_log),
                space=space_check(local, tracker, whole=isinstance(root, Path)),
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
    state_db: str | None = None,
    console: StudyConsole | None = None,
    verbose: bool = False,
    retry_failed: bool = False,
) -> StudyResult:
    """Continue a study whose driver died or was stopped: finished trials are kept, the rest run,
    and so do trials a fault of the machine failed (a killed worker, a lost node, a full disk).
    A study in a bucket is continued on any machine that reaches the bucket, its state database
    and its tracking store.

    Args:
        name_or_dir: the study folder (local or `s3://...`), or the study name (newest folder of
            that name under `storage`).
        tracking_uri: where the study's runs are; default the one it was started with.
        state_db: a study in a bucket: its state database (default SEGSTUDY_STATE_DB, then the
            one it was started with).
        console, verbose: as for `run_study`.
        retry_failed: run every failed trial again, also those that failed by their own doing (a
            diverged loss): after a fix of the code or the machine, the same spec.

    Raises:
        study.disk.NoSpaceError: the study folder's disk is still full, or has less free space
            than the trials run at once are estimated to write.
    """
    study = find_study(name_or_dir, storage=storage, state_db=state_db)
    if study.free_bytes() < RESUME_FLOOR_BYTES:
        raise disk.NoSpaceError(f"{study.path}: its disk is still full ({disk.size_text(study.free_bytes())} free); "
                                "free space, then run segstudy resume again")
    with process_state.stop_on_signals(), full_disk_stops([study.path]):  # docs/ARCHITECTURE.md 3, "Stopping"
        process_state.name_stopped_study(resume_name(study))
        with study.driving("resume"), library_output(verbose) as library_log:  # before anything is delivered or started
            spec = load_spec(study.spec_file)
            check_data(spec)
            tracker = StudyTracker(resolve_tracking_uri(tracking_uri or study.manifest["tracking_uri"], None), spec.name)
            tracker.check_reachable()
            tracker.use_outbox(study.outbox, saved=study.save)
            if tracker.deliver() > 0:
                raise SegstudyError(f"{study.outbox}: kept tracking writes could not be delivered to {tracker.uri}")
            display = Display.of(console, verbose=verbose, library_log=library_log)
            return _on_ray(address, spec, tracker, lambda: study, display=display, locked=True,
                           space=space_check(study.path, tracker, whole=False), retry_failed=retry_failed,
                           tuned=study.manifest.get("chosen") is not None)


RESUME_FLOOR_BYTES = 1024**2  # below this a study folder's disk is still full: resume says so before anything


def replicate_study(
    name_or_dir: str | Path,
    *,
    seeds: Sequence[int],
    address: str | None = None,
    tracking_uri: str | None = None,
    storage: str | Path | None = None,
    state_db: str | None = None,
    console: StudyConsole | None = None,
    verbose: bool = False,
) -> StudyResult:
    """Run the confirm phase of a finished study again under new seeds, with the hyperparameters it
    chose, as a study of its own in the same MLflow experiment tagged `segstudy.replicate_of`
    (`study.run.driver.replicate`); its summary says which of the original's statements hold.

    Args:
        name_or_dir: the finished study's folder, or its name (newest folder of that name in storage).
        seeds: the new confirm seeds (none the study trained already).
        address, tracking_uri, storage, state_db, console, verbose: as for `run_study`; the tracking
            URI defaults to the one the study ran with, the storage to the folder (or bucket prefix)
            the study lies in, the state database to the study's.

    Raises:
        SegstudyError: as `plan_replicate` says, before anything is built or started.
        study.disk.NoSpaceError: the disks it writes to have less free space than it is estimated to write.
        process_state.Interrupted: SIGINT, SIGTERM or SIGHUP stopped it, or a disk filled up; `resume_study`
            on its folder continues it.
    """
    found = find_study(name_or_dir, storage=storage, state_db=state_db, writing=False)
    with process_state.stop_on_signals(), library_output(verbose) as library_log:
        uri = resolve_tracking_uri(tracking_uri or found.manifest["tracking_uri"], None)
        tracker = StudyTracker(uri, found.manifest["name"])
        tracker.check_reachable()
        plan = plan_replicate(found, seeds, tracker=tracker)
        check_data(plan.spec)
        make = plan.maker(storage, tracking_uri=uri, state_db=state_db)  # where it goes, checked
        where = plan.original.parent if storage is None else storage_root(storage)
        local = _local_disk(where)
        with full_disk_stops([local, tracker.local_store]):
            return _on_ray(
                address, plan.spec, tracker, make,
                display=Display.of(console, verbose=verbose, library_log=library_log),
                space=space_check(local, tracker, whole=isinstance(where, Path)), tuned=plan.chosen is not None,
            )


def _on_ray(
    address: str | None,
    spec: StudySpec,
    tracker: StudyTracker,
    study_dir: Callable[[], StudyDir],
    *,
    display: Display,
    space: SpaceCheck,
    locked: bool = False,
    retry_failed: bool = False,
    tuned: bool = False,
) -> StudyResult:
    """Connect to Ray, refuse what the cluster cannot hold, build the data and pass the preflight,
    check the disks have room (`space`), then drive the study. The folder is only made
    (`study_dir`) once all that passed: bad input leaves nothing behind. Ray starts first so its
    idle workers import the trainable while the data are built. `locked`: the caller already
    holds the study's driver lock; `tuned`: its tune phase is over (the plan counts confirm trials only)."""
    process_state.quiet_artifact_downloads()  # a progress bar per logged model otherwise
    log = display.library_log
    started_ray, undo_workers = False, lambda: None
    try:
        started_ray = connect_ray(address, trials_at_once=local_trials_at_once(spec))
        undo_workers = route_ray_worker_output(log) if log is not None else undo_workers
        with process_state.defer_stop():  # Ray's calls take a signal's exception badly (SystemError)
            check_resources(spec)
        data, checked = prepared_data(spec)
        space(spec, data, checked)
        display.console.note(plan_line(spec, data, checked, at_once=cluster_capacity(spec), where="on this Ray cluster",
                                          tuned=tuned))
        with process_state.defer_stop():  # a folder is made whole, and then it is what resume continues
            study = study_dir()
            process_state.name_stopped_study(resume_name(study))
        with contextlib.nullcontext() if locked else study.driving("run"):  # one live driver per study
            if log is not None:  # once the study is ours: taking a study in a bucket over pulls its files
                log.move_to(study.path)
            return _drive(spec, study, tracker, data, display, retry_failed=retry_failed,
                          cost=functools.partial(trial_seconds, spec, data, checked))
    finally:
        with process_state.defer_stop():  # a stop during the clean-up still puts Ray away
            display.console.close()
            if log is not None and log.moved:
                _save_quietly(study, log)
            if started_ray:
                ray.shutdown()
            undo_workers()


def _save_quietly(study: StudyDir, log: Any) -> None:
    """Push the study log to where the study lives; a bucket that does not answer now costs the
    log's tail, never the error that is on its way out."""
    try:
        log.flush()
        study.save(LOG_FILE)
    except SegstudyError as exc:
        warnings.warn(f"the study log stays in {study.path}: {exc}", stacklevel=2)


def resume_name(study: StudyDir) -> str:
    """What `segstudy resume` is given to continue `study`: its bucket URI, or its path, relative
    to the working directory when inside it (a name alone would need the same --storage)."""
    if study.location != str(study.path):
        return study.location
    try:
        return str(study.path.relative_to(Path.cwd()))
    except ValueError:
        return str(study.path)


def sync_study(name_or_dir: str | Path, *, storage: str | Path | None = None, tracking_uri: str | None = None,
               state_db: str | None = None) -> tuple[int, int]:
    """Deliver a study's kept tracking writes; returns (delivered, still waiting)."""
    study = find_study(name_or_dir, storage=storage, state_db=state_db)
    with study.driving("sync"):  # a live driver delivers its own outbox; two deliverers would double writes
        tracker = StudyTracker(resolve_tracking_uri(tracking_uri or study.manifest["tracking_uri"], None), study.manifest["name"])
        tracker.use_outbox(study.outbox, saved=study.save)
        before = len(tracker.outbox or [])
        tracker.check_reachable()
        left = tracker.deliver()
        return before - left, left


def _local_disk(root: Any) -> Path:
    """The local folder whose disk a study under `root` fills: the storage folder itself, or for
    a bucket the working copies' cache (Tune writes results and checkpoints to the bucket)."""
    return root if isinstance(root, Path) else bucket_copy.working_copy(root)


def _drive(
    spec: StudySpec, study: StudyDir, tracker: StudyTracker, data: Any, display: Display, *, retry_failed: bool = False,
    cost: Callable[[Mapping[str, Any], Mapping[str, Any]], float] | None = None,
) -> StudyResult:
    """Run what is left of the study in `study` (everything, for a new one). The study is
    FINISHED only when every cell x seed has its finished run; trials a fault of the machine
    failed leave it FAILED, and `resume` runs them again. `cost`: a confirm trial's estimated
    seconds, to start the longest first (`phases.confirm_fit`)."""
    tracker.use_outbox(study.outbox, saved=study.save)
    cells = expand_cells(spec)
    first_seeds = spec.confirm.budget.min if spec.confirm.budget is not None else len(spec.confirm_seeds)
    if first_seeds < M.MIN_SEEDS:
        warnings.warn(
            f"{spec.name}: {first_seeds} confirmation seed(s); comparisons between arms need "
            f">= {M.MIN_SEEDS} (set confirm.seeds)",
            stacklevel=3,
        )
    with process_state.defer_stop():  # the study run is made and recorded whole
        study_run = open_study_run(spec, study, tracker, cells, data)
    n_trials = n_failed = lost = 0
    unfinished: set[str] = set()
    status = "FAILED"
    try:
        searcher = open_searcher(spec, cells, study) if spec.tuning is not None else None
        done = reconcile(tracker, study_run, outcome_of=lambda key: optuna_outcome(searcher, key),
                         retry=lambda key: retry_trial(searcher, study, key), retry_failed=retry_failed)
        trainable = tune.with_resources(
            tune.with_parameters(train_trial, spec=spec, data=data),
            {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu},
        )
        n_trials, n_failed = len(done.done), len(done.failed)
        chosen: dict[str, dict[str, Any]] = {cell_key(c): {} for c in cells}
        if searcher is not None:
            chosen = study.manifest.get("chosen")
            if chosen is None:
                chosen, tuned, failed, lost = tune_phase(spec, searcher, trainable, tracker, study, display,
                                                         finished=done.results)
                n_trials, n_failed = n_trials + tuned, n_failed + failed
                if lost:  # the phase is not over: resume runs those trials before anything is chosen
                    chosen = {}
                else:
                    study.update(chosen=chosen)
            if chosen and not study.manifest.get("chosen_logged"):  # a replicate starts with its original's choice
                log_chosen(tracker, study_run, chosen)
                study.update(chosen_logged=True)
        confirm = functools.partial(confirm_fit, spec, trainable, tracker=tracker, study=study, display=display, cost=cost)
        stalled = False
        if spec.confirm.budget is not None and chosen:  # rounds until every comparison is resolved (study/run/driver/rounds.py)
            store = ConfirmScores(study.path, saved=study.save)
            outcome = confirm_rounds(
                spec, cells, chosen, restore(store, done, tracker=tracker, study_run=study_run), store=store,
                slots=cluster_capacity(spec),
                fit=lambda todo, stage, open_: confirm(todo, before=[ScoresCallback(store, spec)], stage=stage, open_claims=open_),
                announce=lambda state: announce(state, tracker=tracker, study_run=study_run, console=display.console),
            )
            n_trials, n_failed, stalled = n_trials + outcome.completed, n_failed + outcome.failed, outcome.stalled
        elif spec.confirm.budget is None:
            todo = [
                TrialPlan.config(cell, seed=seed, phase=M.PHASE_CONFIRM, hparams=chosen[cell_key(cell)])["trial"]
                for cell in cells
                if cell_key(cell) in chosen
                for seed in spec.confirm_seeds
                if trial_key(M.PHASE_CONFIRM, cell_key(cell), seed=seed) not in done.done
            ]
            if todo:
                ran, failed = confirm(todo)
                n_trials, n_failed = n_trials + ran, n_failed + failed
        missing = len(cells) - len(chosen)
        due = set() if spec.confirm.budget is not None else {
            trial_key(M.PHASE_CONFIRM, cell_key(cell), seed=seed) for cell in cells for seed in spec.confirm_seeds}
        lost, unfinished = lost_to_faults(tracker, study_run, due) if chosen else (lost, due)
        ok = n_failed == 0 and missing == 0 and not stalled and not lost and not unfinished
        status = "FINISHED" if ok else "FAILED"
        tracker.set_tags(study_run, {"segstudy.n_trials": str(n_trials), "segstudy.n_failed": str(n_failed)})
    except process_state.Interrupted:
        status = "KILLED"
        raise
    except Exception as exc:
        cause = disk.no_space_cause(exc, where=[study.path, tracker.local_store])
        if cause is None:
            raise
        status = "KILLED"
        raise process_state.interrupted_by_full_disk(cause) from None
    finally:
        with process_state.defer_stop():  # closed whole, even when a stop comes now
            try:
                pending = close_study_run(tracker, study_run, status=status, study=study)
            except Exception as exc:
                # The store's disk is full as well: the run stays open, `status` says its driver is
                # gone, and resume closes and continues it.
                cause = disk.no_space_cause(exc, where=[tracker.local_store or tracker.uri, study.path])
                if cause is None:
                    raise
                raise process_state.interrupted_by_full_disk(cause) from None
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
        lost=lost,
        unfinished=len(unfinished),
        folder=study,
    )


__all__ = ["StudyResult", "prepared_data", "replicate_study", "resume_name", "resume_study", "run_study", "sync_study"]
