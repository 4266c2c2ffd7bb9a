"""The Ray Tune trainable every cell runs: one trial, reported epoch by epoch.

Ray Tune calls `train_trial(config, spec=..., data=...)`; `spec` and `data` arrive once through
`tune.with_parameters` (the object store), the config carries only cell, seed and phase. The work
itself is `study.training.trial`; this module only reports it to Tune. A tune trial that ran its
whole schedule keeps its training, and the confirm trial that would repeat it restores it instead
(`study.training.reuse`).
"""

from __future__ import annotations

import math
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from study import metrics_names as M
from study.errors import first_line
from study.run.tune.kept_training import keep, kept_for
from study.run.tune.tune_report import EpochReporter
from study.data import DATASETS, LevelData
from study.serving import Preprocessing, write_package
from study.spec import StudySpec
from study.training.plan import TrialPlan
from study.training.inputs.study_data import StudyData
from study.training.trial import DETERMINISTIC, TrialFailure, network_input, run_plan, train_plan


CONFIRM_REPORT_INTERVAL_S = 5.0  # confirm trials have no scheduler waiting on each epoch


def train_trial(config: dict[str, Any], *, spec: StudySpec, data: StudyData) -> None:
    """Tune entry point: one trial, reported epoch by epoch; confirm trials are then tested.

    A `TrialFailure`, and any error the trial's own code raises (a shape mismatch, a bad value:
    `DETERMINISTIC`), is reported as the trial's last result rather than raised: Tune retries
    raised errors up to `resources.max_failures`, which is right for a killed worker and wasted
    on a failure that would repeat. Ray ends a stopped trial with SystemExit, which passes through.
    """
    plan = TrialPlan.from_config(spec, config)
    # Early stopping decides on every epoch in the tune phase: report each one as it ends.
    reporter = EpochReporter(interval_s=0.0 if plan.phase == M.PHASE_TUNE else CONFIRM_REPORT_INTERVAL_S)
    restored = None
    try:
        if plan.phase == M.PHASE_TUNE:
            epochs: list[dict[str, float]] = []

            def on_epoch(values: dict[str, float]) -> None:
                epochs.append(values)
                if values[M.EPOCH] < spec.training.epochs:  # Tune ends the trial on its last epoch's report
                    reporter(values)

            trained = train_plan(plan, spec=spec, data=data, on_epoch=on_epoch)  # validation only
            keep(trained, plan=plan, spec=spec, epochs=epochs)  # for the confirm trial of the tuning seed
            reporter(epochs[-1])
            reporter.flush()
            return
        restored = kept_for(plan, spec=spec, data=data)
        if restored is not None:  # trained in the tune phase already: its epochs are this run's too
            for values in restored.kept.epochs:
                reporter(values)
        result = run_plan(plan, spec=spec, data=data, on_epoch=reporter, trained=None if restored is None else restored.trained)
    except TrialFailure as exc:
        reporter.failed(f"{type(exc).__name__}: {exc}", {spec.objective: math.nan})
        return
    except DETERMINISTIC as exc:
        traceback.print_exc()  # the worker's log keeps the whole story; MLflow gets the first line
        first = first_line(exc, limit=500, empty="")
        reporter.failed(f"{type(exc).__name__}: {first}", {spec.objective: math.nan})
        return
    metrics: dict[str, Any] = {
        **result.metrics,
        M.EPOCH: spec.training.epochs,  # the final result ran the full schedule
        M.LEARNED: float(result.verdict.learned),
        M.LEARNING_ISSUE: result.verdict.reason,
    }
    if restored is not None:
        metrics[M.TRAINED_IN] = restored.kept.key

    def write(directory: Path) -> None:
        result.per_image.to_csv(directory / M.PER_IMAGE_FILE, index=False)
        if result.patch_foreground is not None:
            pd.DataFrame({"foreground_fraction": result.patch_foreground}).to_csv(directory / M.PATCH_FG_FILE, index=False)
            counts, edges = np.histogram(result.patch_foreground, bins=20, range=(0.0, 1.0))
            hist = pd.DataFrame({"bin_low": edges[:-1], "bin_high": edges[1:], "count": counts})
            hist.to_csv(directory / M.PATCH_FG_HIST_FILE, index=False)
        write_package(
            directory,
            state_dict=result.state_dict,
            architecture=plan.arch,
            preprocessing=preprocessing_of(plan, spec, data[plan.data_key]),
            calibration=result.calibration,
        )
        result.coverage.to_csv(directory / M.COVERAGE_FILE, index=False)

    reporter.final(metrics, write)


def preprocessing_of(plan: TrialPlan, spec: StudySpec, level: LevelData) -> Preprocessing:
    """What `segstudy predict` must repeat to apply this trial's model to a new image."""
    spatial_dims, in_channels, img_size = network_input(plan, level)
    return Preprocessing(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        img_size=img_size,
        intensity=DATASETS[spec.data.dataset].intensity,
        patch_size=plan.patch_size,
        sw_batch_size=spec.inference.sw_batch_size,
        overlap=spec.inference.overlap,
        threshold=spec.evaluation.threshold,
        td_defined=bool(np.isfinite(level.train.td).any()),
        spacing=[float(v) for v in level.train.spacing],
    )
