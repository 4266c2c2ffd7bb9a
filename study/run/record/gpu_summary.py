"""The study-wide GPU figure: how busy the GPU was over all of a study's trials.

Each CUDA trial logs the mean NVML utilisation it saw and over how many samples
(study/training/device/gpu_monitor.py); the study run gets the sample-weighted mean, so a long trial
counts more than a short one. Trials packed on one GPU sample the same device at the same time,
so this is the utilisation seen while trials ran, not a sum of shares. A CPU study logs nothing.
"""

from __future__ import annotations

import logging

from study import metrics_names as M
from study.run.record.reconcile import study_trial_runs
from study.tracking import StudyTracker
from study.training.device.gpu_monitor import weighted_mean

log = logging.getLogger(__name__)


def study_gpu_figures(trial_metrics: list[dict[str, float]]) -> dict[str, float]:
    """gpu_util_mean and gpu_util_samples over trials' final metrics; {} when none ran on CUDA."""
    mean, samples = weighted_mean((m.get(M.GPU_UTIL_MEAN, float("nan")), m.get(M.GPU_UTIL_SAMPLES, 0.0)) for m in trial_metrics)
    if not samples:
        return {}
    figures = {M.GPU_UTIL_MEAN: mean, M.GPU_UTIL_SAMPLES: samples}
    peaks = [m[M.GPU_PEAK_MEMORY] for m in trial_metrics if M.GPU_PEAK_MEMORY in m]
    if peaks:
        figures[M.GPU_PEAK_MEMORY] = max(peaks)
    return figures


def log_study_gpu(tracker: StudyTracker, study_run_id: str) -> dict[str, float]:
    """Log the study-wide GPU figures on the study run (read back from its trial runs).

    Called as the study ends; a figure must never keep the study run from being closed, so a
    tracking error here is a warning (the trials keep their own figures).
    """
    try:
        figures = study_gpu_figures([run.data.metrics for run in study_trial_runs(tracker, study_run_id)])
    except Exception as exc:  # noqa: BLE001 - see above
        log.warning("study-wide GPU figures not logged: %s", exc)
        return {}
    if figures:
        tracker.log_metrics(study_run_id, figures)
    return figures


__all__ = ["log_study_gpu", "study_gpu_figures"]
