"""One phase (or one confirm round) as one `Tuner.fit`, stopped whole by a stop signal."""

from __future__ import annotations

from typing import Any

from ray import tune

from study import metrics_names as M
from study import disk, process_state
from study.run.cluster.capacity import cluster_capacity
from study.run.display.console import Display, stopping_line
from study.run.record.study_dir import StudyDir
from study.run.tune.stopping import PhaseStopper
from study.run.tune.tune_report import LastResultFile
from study.spec import StudySpec


def fit(
    spec: StudySpec,
    trainable: Any,
    *,
    display: Display,
    study: StudyDir,
    name: str,
    callbacks: list[tune.Callback],
    param_space: dict[str, Any] | None = None,
    search_alg: Any = None,
    scheduler: Any = None,
    num_samples: int = 1,
    max_concurrent: int | None = None,
    max_epochs: int | None = None,
) -> None:
    """One phase as one `Tuner.fit` in the experiment folder `name` of `study` (a local folder, or
    the bucket, through the filesystem the study names); what Tune prints goes to the study log
    unless --verbose.

    A stop signal during the phase ends it at Tune's next step (`PhaseStopper`) and is raised as
    `process_state.Interrupted` when the fit returns, so no later phase starts and nothing the
    caller writes after a finished phase (the chosen hyperparameters) is written. A full disk is a
    stop too: met in a hook it ends the phase the same way (`full_disk_stops`); met by Tune itself
    (its experiment state) it ends the fit with an error, which becomes the same stop here.
    """
    process_state.quiet_tune_loggers()
    console = display.console
    storage_path, filesystem = study.tune_storage()
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
                storage_path=storage_path,
                storage_filesystem=filesystem,
                callbacks=[*callbacks, LastResultFile(study.path / name)],
                stop=stopper,
                verbose=1 if display.verbose else 0,  # segstudy's console shows progress; --verbose brings Tune's back
                # A crashed or killed worker is retried; deterministic failures are not (TrialFailure).
                failure_config=tune.FailureConfig(max_failures=spec.resources.max_failures),
            ),
        )
        # Created above with the real stdout: the Tuner pickles its callbacks, and a redirected stream would not pickle.
        with process_state.tune_prints_to(display.library_log):
            try:
                tuner.fit()
            except Exception as exc:
                cause = disk.no_space_cause(exc, where=study.path / name)
                if cause is None or not process_state.stop_on_full_disk(cause):
                    raise


__all__ = ["fit"]
