"""Names shared by the trainable, Tune, MLflow logging and the analysis.

One module so that a metric logged under one name is read back under the same one everywhere.
"""

from __future__ import annotations

import re

from study.errors import SegstudyError

# The fewest confirm seeds per arm a comparison needs: with fewer, a difference may be one lucky
# initialisation and the intervals are too wide to separate arms (docs/ARCHITECTURE.md 5). The run
# warns below it and the analysis flags it; here because both read this module.
MIN_SEEDS = 3

# Reported by the trainable each epoch (step = epoch).
EPOCH = "epoch"
TRAIN_LOSS = "train_loss"
VAL_DICE = "val_dice"
BEST_VAL_DICE = "best_val_dice"  # running maximum of val_dice: the tuning objective with best weights

# The learning gate's verdict, in a confirm trial's final result (then MLflow tags, below).
LEARNED = "learned"  # 1.0 learned, 0.0 not
LEARNING_ISSUE = "learning_issue"
TRAINED_IN = "trained_in"  # in a confirm trial's final result: the tune trial whose training it restored

# The per-image scores of study/metrics/segmentation.py:METRICS (whose entries, with the MONAI
# computation and the empty-mask policy, are keyed by these names; an import-time check keeps
# the two in step). Each is a per_image.csv column, logged as TEST_PREFIX + name (the test-set
# mean) and TEST_PREFIX + name/perturbation/severity (per condition). The names live here, not
# there, because analysis reads them without importing torch or MONAI.
SCORES = ("dice", "hd95", "nsd", "assd")
LOWER_IS_BETTER = ("hd95", "assd")  # the distances; a rank or "best" must invert them
TEST_PREFIX = "test_"


def score_key(score: str) -> str:
    """The MLflow metric of a score's test-set mean, e.g. test_hd95."""
    return f"{TEST_PREFIX}{score}"


def condition_key(score: str, perturbation: str, severity: int | str) -> str:
    """The MLflow metric of a score's mean under one condition, e.g. test_dice/gaussian_noise/3."""
    return f"{score_key(score)}/{perturbation}/{severity}"


# Reported once at the end of a trial, on the test split.
TEST_DICE = score_key("dice")
TEST_HD95 = score_key("hd95")
TEST_NSD = score_key("nsd")
TEST_ASSD = score_key("assd")
TEST_TD = "test_td"
TEST_MISSED = "test_missed"
TEST_METRICS = (*(score_key(s) for s in SCORES), TEST_TD, TEST_MISSED)

# Columns of per_image.csv.
PER_IMAGE_FILE = "per_image.csv"
PER_IMAGE_COLUMNS = ("image_id", "condition", *SCORES, "td", "empty_gt", "empty_pred", "missed", "fbr")
COVERAGE_FILE = "coverage.csv"  # per stratum: measured coverage of the Dice bound, FNR at lambda
COVERAGE_PREFIX = "coverage/"  # e.g. coverage/clean, coverage/gaussian_noise/3
FNR_PREFIX = "test_fnr/"  # FNR at the risk-controlled threshold, per stratum
PERTURBATION_PARAMS = "perturbation_params"  # realised parameters (JSON) of the condition
CLEAN = "clean"
# The per_image.csv `condition` column: CLEAN, "<perturbation>:<severity>" (the model's own data level
# under a perturbation), or "shift:<factor>=<level>" (the clean test split rendered at another level
# of a dataset factor, evaluation.shift). Built and read only through the functions below, which the
# trial (writing) and the analysis (reading) share.
_CONDITION = re.compile(r"^(?P<name>[^:\s]+):(?P<severity>\d+)$")
SHIFT = "shift"
_SHIFT = re.compile(rf"^{SHIFT}:(?P<factor>[A-Za-z_][A-Za-z0-9_]*)=(?P<level>[A-Za-z0-9_.+-]+)$")


def condition_name(perturbation: str, severity: int) -> str:
    """The `condition` column value of a perturbation at a severity, e.g. 'gaussian_noise:3'."""
    return f"{perturbation}:{severity}"


def shift_condition(factor: str, level: float | int | str) -> str:
    """The `condition` of the test split rendered at another level of a factor, e.g. 'shift:alpha=0.5'.

    A level is written as the cell string writes factor values (0.5 stays '0.5').
    """
    return f"{SHIFT}:{factor}={repr(level) if isinstance(level, float) else level}"


def parse_shift(text: str) -> tuple[str, str] | None:
    """(factor, level as written) of a shift condition; None for any other condition.

    Example:
        >>> parse_shift("shift:alpha=0.5"), parse_shift("clean")
        (('alpha', '0.5'), None)
    """
    match = _SHIFT.match(str(text))
    return None if match is None else (match["factor"], match["level"])


def is_shift(text: str) -> bool:
    """True for a train/test shift condition: rows that are neither clean nor a perturbation."""
    return parse_shift(text) is not None


def test_level_column(factor: str) -> str:
    """The per_image.csv column holding the level a row's test images were rendered at, e.g. test_alpha.

    Equal to the cell's own level (its factor column) on every row but the shifted ones.
    """
    return f"{TEST_PREFIX}{factor}"


def parse_condition(text: str) -> tuple[str | None, int]:
    """Split a per_image.csv condition into (perturbation, severity); "clean" is (None, 0).

    Shift conditions are not perturbations and are refused here: the analysis keeps them apart
    (`analysis.read.runs.load_per_image`), so a robustness summary never reads one as a severity.

    Raises:
        SegstudyError: neither "clean" nor "<perturbation>:<severity>".

    Example:
        >>> parse_condition("gaussian_noise:3"), parse_condition("clean")
        (('gaussian_noise', 3), (None, 0))
    """
    if text == CLEAN:
        return None, 0
    match = _CONDITION.match(str(text))
    if match is None:
        accepted = f"'{CLEAN}' or '<perturbation>:<severity>', e.g. 'gaussian_noise:3'"
        if is_shift(text):
            raise SegstudyError(f"condition '{text}' is a train/test shift, not a perturbation; accepted forms here are {accepted}")
        raise SegstudyError(f"condition '{text}': accepted forms are {accepted}")
    return match["name"], int(match["severity"])


def condition_path(condition: str) -> str:
    """A condition as an MLflow metric suffix: 'clean', 'gaussian_noise/3' or 'shift_alpha/0.5'.

    MLflow metric names allow letters, digits, '_', '-', '.', ' ', ':' and '/' only, hence '_' for
    the shift form's ':' and '/' for its '='; used as test_<score>/<this> and coverage/<this>.
    """
    shift = parse_shift(condition)
    if shift is not None:
        return f"{SHIFT}_{shift[0]}/{shift[1]}"
    perturbation, severity = parse_condition(condition)
    return CLEAN if perturbation is None else f"{perturbation}/{severity}"


def condition_metric(score: str, condition: str) -> str:
    """The MLflow metric of a score's mean under any condition but clean, e.g.
    test_dice/gaussian_noise/3 or test_dice/shift_alpha/0.5."""
    return f"{score_key(score)}/{condition_path(condition)}"


# Patch-based trials: the distribution of training-patch foreground fractions, and memory.
PATCH_FG_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
PATCH_FG_PREFIX = "patch_fg_q"  # e.g. patch_fg_q50
PATCH_FG_MEAN = "patch_fg_mean"
PATCH_FG_FILE = "patch_foreground.csv"  # one row per training patch
PATCH_FG_HIST_FILE = "patch_foreground_hist.csv"  # 20 bins over [0, 1]: bin_low, bin_high, count
PEAK_MEMORY = "peak_memory_mb"

# Trials on CUDA only (study/training/device/gpu_monitor.py), each epoch (running) and at the end; the
# study run gets the sample-weighted mean over its trials. Absent on CPU.
GPU_UTIL_MEAN = "gpu_util_mean"  # NVML utilisation of the whole device, percent, sampled while the trial ran
GPU_UTIL_SAMPLES = "gpu_util_samples"  # how many samples gpu_util_mean is over (its weight)
GPU_DEVICE_MEMORY_PEAK = "gpu_device_memory_peak_mb"  # device memory in use, every process on it
GPU_PEAK_MEMORY = "gpu_peak_memory_mb"  # the trial's own CUDA allocator peak
GPU_METRICS = (GPU_UTIL_MEAN, GPU_UTIL_SAMPLES, GPU_DEVICE_MEMORY_PEAK, GPU_PEAK_MEMORY)

# MLflow tags.
ROLE_TAG = "segstudy.role"
ROLE_STUDY = "study"
ROLE_TRIAL = "trial"
CELL_TAG = "segstudy.cell"
PHASE_TAG = "segstudy.phase"
SEED_TAG = "segstudy.seed"
FACTORS_TAG = "segstudy.factors"
ERROR_TAG = "segstudy.error"
TRIAL_ID_TAG = "segstudy.trial_id"
PARENT_TAG = "mlflow.parentRunId"
CHOSEN_TAG = "segstudy.chosen"  # JSON of each cell's chosen hyperparameters, on the study run
STOPPED_EARLY_TAG = "segstudy.stopped_early"

PHASE_TUNE = "tune"
PHASE_CONFIRM = "confirm"
VERSIONS_TAG = "segstudy.versions"  # JSON of python and library versions, on every run
TRIAL_KEY_TAG = "segstudy.trial_key"  # phase|cell|seed (confirm) or phase|cell|optuna=N (tune): resume's identity
STUDY_DIR_TAG = "segstudy.study_dir"  # the study directory (spec copy, Optuna storage, outbox)
RECOVERED_TAG = "segstudy.recovered"  # closed by resume from the Optuna record after the driver died
LEARNED_TAG = "segstudy.learned"  # "true"/"false": the learning gate's verdict on a confirm trial
TRAINED_IN_TAG = "segstudy.trained_in"  # a confirm trial that restored a tune trial's training: that trial's key
LEARNING_ISSUE_TAG = "segstudy.learning_issue"  # why the gate said "false" (study.training.evaluation.learning)
RETRIED_TAG = "segstudy.retried"  # a failed attempt that ran again (Tune's max_failures, or resume); not a result
# On a FAILED trial run: "machine" when the failure was the machine's (a killed worker, a lost node,
# a full disk), not the trial's own; `segstudy resume` runs such trials again (reconcile).
FAULT_TAG = "segstudy.fault"
FAULT_MACHINE = "machine"
ROUNDS_TAG = "segstudy.rounds"  # JSON on the study run: a sequential confirm phase's round state (study/run/driver/rounds.py)
# On the study run: running | finished | failed | interrupted (stopped by SIGINT/SIGTERM/SIGHUP or a
# full disk; MLflow status KILLED; `segstudy resume` continues it). STOP_SIGNAL_TAG names the signal,
# or the full disk ('no space left on device: PATH (N free)').
STATE_TAG = "segstudy.state"
STATE_INTERRUPTED = "interrupted"
STATE_FINISHED = "finished"
# On a replicate's study run (`segstudy replicate`): the study run id of the study it replicates.
REPLICATE_OF_TAG = "segstudy.replicate_of"
STOP_SIGNAL_TAG = "segstudy.stopped_by"
