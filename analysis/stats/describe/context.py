"""Context vs foreground ratio (docs/ARCHITECTURE.md 4.2): where each test volume's FBR falls among the
training patches' FBRs, and test Dice per FBR bin.

The reference study compared each per-volume test FBR with the min and max of the per-patch
training FBRs. One lucky crop sets the max, so nearly every test volume looked "inside" and the
shift was understated. Here the comparison is with the quantiles of the training-patch
distribution (logged as `patch_fg_q05` ... `patch_fg_q95` foreground fractions f, converted to
FBR = f / (1 - f)), so "outside" means outside the central 90% of what the network saw.

    from analysis import load_trials, load_per_image
    from analysis.stats.describe.context import dice_by_fbr_bin, fbr_shift, with_patch_metrics
    trials = with_patch_metrics(load_trials("context_vs_fbr", tracking_uri=uri), experiment="context_vs_fbr",
                                tracking_uri=uri)
    shift = fbr_shift(load_per_image(trials, tracking_uri=uri), trials)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from analysis.read.runs import LATEST, trial_runs
from analysis.stats.describe.summary import summarise
from study import metrics_names as M
from study.errors import SegstudyError

FBR = "fbr"
PATCH_FG_COLUMNS = tuple(f"{M.PATCH_FG_PREFIX}{round(q * 100):02d}" for q in M.PATCH_FG_QUANTILES)
PATCH_METRICS = (*PATCH_FG_COLUMNS, M.PATCH_FG_MEAN, M.PEAK_MEMORY)
BELOW, INSIDE, ABOVE = "below", "inside", "above"
SHIFT_COLUMNS = ("train_fbr_q05", "train_fbr_q95", "fbr_quantile", "fbr_position")
BIN_COLUMNS = ("fbr_low", "fbr_high", "fbr_centre")
DEFAULT_FBR_BINS = 6
# Columns of a per_image frame that are neither factors nor scores (see analysis.read.runs.load_per_image).
_NOT_FACTORS = {"run_id", "phase", "cell", "seed", *M.PER_IMAGE_COLUMNS, *SHIFT_COLUMNS}


def with_patch_metrics(
    trials: pd.DataFrame, *, experiment: str, tracking_uri: str, study: str = LATEST
) -> pd.DataFrame:
    """A copy of `trials` with the patch statistics every patch-based trial logs as metrics.

    `load_trials` keeps only `test_*` metrics; this adds patch_fg_q05 ... patch_fg_q95,
    patch_fg_mean (training-patch foreground fractions) and peak_memory_mb, NaN for a trial that
    did not log them. Pass the same `experiment`, `tracking_uri` and `study` as to `load_trials`.
    """
    wanted = set(trials["run_id"])
    logged = {
        run.info.run_id: run.data.metrics
        for run in trial_runs(experiment, tracking_uri=tracking_uri, study=study)
        if run.info.run_id in wanted
    }
    frame = trials.copy()  # keeps attrs (factor names)
    for name in PATCH_METRICS:
        frame[name] = [logged.get(run_id, {}).get(name, np.nan) for run_id in frame["run_id"]]
    return frame


def fbr_shift(per_image: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """Place each test volume's FBR within its own trial's training-patch FBR distribution.

    The logged foreground-fraction quantiles q05, q25, q50, q75, q95 become FBR quantiles by
    f / (1 - f) (monotone, so quantiles map to quantiles; f = 1 gives inf). A test FBR between two
    of them gets a quantile by linear interpolation; one equal to several tied quantiles (e.g.
    q05 = q25 = 0 when many crops hold no foreground) gets their mean level.

    Args:
        per_image: from `load_per_image` (needs run_id and fbr).
        trials: from `with_patch_metrics` (needs run_id and patch_fg_q05 ... patch_fg_q95).

    Returns:
        `per_image` plus train_fbr_q05, train_fbr_q95 (the trial's training-patch FBR quantiles),
        fbr_quantile (in [0.05, 0.95]; 0.05 below, 0.95 above the range) and fbr_position
        ("below", "inside" or "above"). Both are missing for a trial without patch statistics or
        a volume without an FBR.

    Raises:
        SegstudyError: a needed column is missing.

    Example:
        >>> trials = pd.DataFrame({"run_id": ["r"], "patch_fg_q05": [0.1], "patch_fg_q25": [0.2],
        ...                        "patch_fg_q50": [0.5], "patch_fg_q75": [0.6], "patch_fg_q95": [0.75]})
        >>> fbr_shift(pd.DataFrame({"run_id": ["r"] * 3, "fbr": [0.05, 2.0, 4.0]}), trials)["fbr_position"].tolist()
        ['below', 'inside', 'above']
    """
    _require(per_image, ["run_id", FBR], what="per_image", hint="per_image.csv from `load_per_image`")
    _require(trials, ["run_id", *PATCH_FG_COLUMNS], what="trials", hint="trials from `with_patch_metrics`")
    levels = np.asarray(M.PATCH_FG_QUANTILES, dtype=float)
    fractions = trials.set_index("run_id")[list(PATCH_FG_COLUMNS)].astype(float)
    frame = per_image.copy()
    quantile = np.full(len(frame), np.nan)
    low, high = np.full(len(frame), np.nan), np.full(len(frame), np.nan)
    run_ids = frame["run_id"].to_numpy()
    test_fbr = pd.to_numeric(frame[FBR], errors="coerce").to_numpy(dtype=float)
    for run_id, f in fractions.iterrows():
        rows = np.flatnonzero(run_ids == run_id)
        if rows.size == 0 or f.isna().any():
            continue
        train = np.maximum.accumulate(_to_fbr(f.to_numpy()))  # logged quantiles may wobble by float noise
        low[rows], high[rows] = train[0], train[-1]
        quantile[rows] = _quantile_of(test_fbr[rows], levels, train)
    position = pd.Series(pd.NA, index=frame.index, dtype="string")
    position[quantile < levels[0]] = BELOW
    position[quantile > levels[-1]] = ABOVE
    position[(quantile >= levels[0]) & (quantile <= levels[-1])] = INSIDE
    frame["train_fbr_q05"], frame["train_fbr_q95"] = low, high
    frame["fbr_quantile"] = np.clip(quantile, levels[0], levels[-1])
    frame["fbr_position"] = position
    return frame


def dice_by_fbr_bin(
    per_image: pd.DataFrame,
    *,
    bins: int | Sequence[float] = DEFAULT_FBR_BINS,
    by: Sequence[str] | None = None,
    condition: str | None = M.CLEAN,
) -> pd.DataFrame:
    """Test Dice per FBR bin: mean and 95% t-interval over seeds, per group of `by`.

    Seeds are the replicates (as in `summarise`): each seed's Dice in a bin is first averaged over
    its volumes (of every trial of the group), then the seed means are summarised. Volumes with
    FBR 0 (no foreground) or no FBR are left out: they have no place on a log scale.

    Args:
        per_image: from `load_per_image` (needs seed, dice, fbr and the `by` columns).
        bins: a number of log-spaced bins spanning the observed FBRs, or increasing positive bin
            edges; bins are [low, high), the last one closed.
        by: grouping columns; default every factor column (all but the per_image.csv, id and
            `fbr_shift` columns).
        condition: keep rows of this condition only (default clean); None keeps every row and
            groups by condition too.

    Returns:
        Columns `by`..., fbr_low, fbr_high, fbr_centre (geometric), metric ("dice"), mean, std,
        n (seeds), ci_low, ci_high, n_volumes (rows pooled over seeds), fbr_median (of those
        rows: where the bin's volumes actually lie); one row per non-empty group and bin.

    Raises:
        SegstudyError: bad `bins`, or a needed column is missing.
    """
    groups = list(by) if by is not None else [c for c in per_image.columns if c not in _NOT_FACTORS]
    if condition is None and "condition" in per_image.columns:
        groups.append("condition")
    _require(per_image, [*groups, "seed", "dice", FBR], what="per_image", hint="per_image.csv from `load_per_image`")
    frame = per_image
    if condition is not None and "condition" in frame.columns:
        frame = frame[frame["condition"] == condition]
    fbr = pd.to_numeric(frame[FBR], errors="coerce").to_numpy(dtype=float)
    frame = frame[np.isfinite(fbr) & (fbr > 0)].copy()
    edges = fbr_edges(frame[FBR].to_numpy(dtype=float), bins)
    index = np.searchsorted(edges, frame[FBR].to_numpy(dtype=float), side="right") - 1
    index[frame[FBR].to_numpy(dtype=float) == edges[-1]] = len(edges) - 2  # last bin is closed
    keep = (index >= 0) & (index < len(edges) - 1)
    frame, index = frame[keep], index[keep]
    frame["fbr_low"], frame["fbr_high"] = edges[index], edges[index + 1]
    frame["fbr_centre"] = np.sqrt(frame["fbr_low"] * frame["fbr_high"])

    keys = [*groups, *BIN_COLUMNS]
    per_seed = frame.groupby([*keys, "seed"], sort=True, dropna=False).agg(dice=("dice", "mean"), n_volumes=("dice", "size"))
    per_seed = per_seed.reset_index()
    table = summarise(per_seed, by=keys, metric="dice")
    volumes = per_seed.groupby(keys, sort=True, dropna=False)["n_volumes"].sum()
    median = frame.groupby(keys, sort=True, dropna=False)[FBR].median().rename("fbr_median")
    return table.merge(pd.concat([volumes, median], axis=1).reset_index(), on=keys, how="left")


def fbr_edges(fbr: np.ndarray, bins: int | Sequence[float]) -> np.ndarray:
    """Bin edges: `bins` log-spaced bins over the positive values of `fbr`, or `bins` itself checked."""
    if isinstance(bins, (int, np.integer)) and not isinstance(bins, bool):
        if bins < 1:
            raise SegstudyError(f"bins={bins}: accepted are a positive number of bins or increasing positive edges")
        values = fbr[np.isfinite(fbr) & (fbr > 0)]
        if values.size == 0:
            return np.array([1.0, 10.0])  # nothing to bin; any valid edges give an empty table
        low, high = float(values.min()), float(values.max())
        if low == high:  # one distinct value: one bin around it
            low, high = low / 2, high * 2
        return np.geomspace(low, high, bins + 1)
    edges = np.asarray(bins, dtype=float)
    if edges.ndim != 1 or edges.size < 2 or not (edges > 0).all() or not (np.diff(edges) > 0).all():
        raise SegstudyError(
            f"bins={list(bins)}: accepted are a positive number of bins or >= 2 increasing positive edges"
        )
    return edges


def _to_fbr(fraction: np.ndarray) -> np.ndarray:
    """Foreground fraction f -> foreground/background ratio f / (1 - f); an all-foreground patch is inf."""
    f = np.clip(fraction, 0.0, 1.0)
    return np.where(f < 1.0, f / np.maximum(1.0 - f, 1e-300), np.inf)


def _quantile_of(values: np.ndarray, levels: np.ndarray, train: np.ndarray) -> np.ndarray:
    """Quantile level of each value in a distribution known by (levels, train) quantile pairs.

    Returns levels outside [levels[0], levels[-1]] for values outside the range (the caller reads
    them as below / above, then clips), NaN for NaN values.
    """
    left = np.searchsorted(train, values, side="left")
    right = np.searchsorted(train, values, side="right")
    out = np.full(values.shape, np.nan)
    for i, (x, a, b) in enumerate(zip(values, left, right, strict=True)):
        if np.isnan(x):
            continue
        if a < b:  # equal to one or more logged quantiles: their mean level
            out[i] = levels[a:b].mean()
        elif a == 0:
            out[i] = -np.inf
        elif a == len(train):
            out[i] = np.inf
        else:  # strictly between train[a-1] and train[a]; (x - lo) / inf = 0 when the upper one is inf
            with np.errstate(invalid="ignore"):
                share = (x - train[a - 1]) / (train[a] - train[a - 1])
            out[i] = levels[a - 1] + share * (levels[a] - levels[a - 1])
    return out


def _require(frame: pd.DataFrame, columns: Sequence[str], *, what: str, hint: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise SegstudyError(f"{what}: missing column(s) {', '.join(missing)}; expected {hint}")


__all__ = [
    "ABOVE",
    "BELOW",
    "DEFAULT_FBR_BINS",
    "INSIDE",
    "PATCH_FG_COLUMNS",
    "dice_by_fbr_bin",
    "fbr_edges",
    "fbr_shift",
    "with_patch_metrics",
]
