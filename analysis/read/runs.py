"""Read a study's trial runs out of MLflow into tidy pandas frames.

The study driver writes one child run per trial (tags, params and metrics named in
`study.metrics_names`); this module turns them into one row per trial with every factor as its own
typed column, so the rest of the analysis is plain pandas and never touches MLflow.

Reading goes through `MlflowClient(tracking_uri=...)` rather than `mlflow.search_runs`, which
reads the process-global tracking URI: analysing one store must not redirect a study that is
logging to another in the same process.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from study import metrics_names as M
from study import process_state
from study.errors import SegstudyError
from study.tracking import reading_client

# Columns every trials frame starts with; a param of the same name gets a `param.` prefix.
BASE_COLUMNS = ("run_id", "status", "phase", "cell", "seed")
PHASES = (M.PHASE_TUNE, M.PHASE_CONFIRM)
LATEST, ALL = "latest", "all"
FINISHED = "FINISHED"


def load_trials(
    experiment: str,
    *,
    tracking_uri: str,
    phase: str | None = M.PHASE_CONFIRM,
    include_failed: bool = False,
    study: str = LATEST,
) -> pd.DataFrame:
    """One row per trial run of `experiment`: ids, factors, hyperparameters and test metrics.

    Args:
        experiment: MLflow experiment name (= the study spec's `name`).
        tracking_uri: where the runs live, e.g. "sqlite:////abs/mlflow.db" or "http://host:5000".
        phase: "confirm" (the seeded repeats of each cell's best config), "tune", or None for all.
        include_failed: keep runs whose status is not FINISHED (failed, killed, still running);
            their reason is in the `error` column.
        study: which study run's trials: "latest" (the newest study run that has trials and is not
            a replicate, so a re-run of the same spec does not double its seeds), "all", or a study
            run id.

    Returns:
        Columns run_id, status, phase, cell, seed (int), one column per factor (numeric factors as
        float, others as str), one per hyperparameter (same typing), every `test_*` metric and
        `error`. `frame.attrs["factors"]` and `frame.attrs["hyperparameters"]` list those names.

    Raises:
        SegstudyError: unknown phase, missing store, unknown experiment, or no matching trials.

    Example:
        >>> trials = load_trials("skip_vs_complexity", tracking_uri="sqlite:////data/mlflow.db")
        >>> trials.groupby(["architecture", "alpha"])["test_dice"].mean()  # doctest: +SKIP
    """
    if phase is not None and phase not in PHASES:
        raise SegstudyError(f"phase '{phase}': accepted values are {', '.join(PHASES)} or None (all phases)")
    runs = trial_runs(experiment, tracking_uri=tracking_uri, study=study)
    kept = [
        r for r in runs
        if (phase is None or r.data.tags.get(M.PHASE_TAG) == phase)
        and (include_failed or r.info.status == FINISHED)
    ]
    if not kept:
        raise SegstudyError(_nothing_found(experiment, runs, phase=phase, include_failed=include_failed))
    return _frame(kept)


def trial_runs(experiment: str, *, tracking_uri: str, study: str = LATEST) -> list[Run]:
    """Every trial run (any phase or status) of one study run of `experiment` (see `load_trials`)."""
    client = _client(tracking_uri)
    experiment_id = _experiment_id(client, experiment, tracking_uri)
    runs = _runs_of_role(client, experiment_id, M.ROLE_TRIAL)
    return _of_study(runs, study, replicates=replicate_runs(client, experiment_id) if study == LATEST else {})


def study_runs(experiment: str, *, tracking_uri: str) -> list[Run]:
    """Every study run of `experiment` (one per `segstudy run`), newest first."""
    client = _client(tracking_uri)
    runs = _runs_of_role(client, _experiment_id(client, experiment, tracking_uri), M.ROLE_STUDY)
    return sorted(runs, key=lambda r: r.info.start_time or 0, reverse=True)


def _experiment_id(client: MlflowClient, experiment: str, tracking_uri: str) -> str:
    found = client.get_experiment_by_name(experiment)
    if found is None:
        names = sorted(e.name for e in _all_pages(lambda token: client.search_experiments(page_token=token)))
        raise SegstudyError(
            f"experiment '{experiment}' not found in {tracking_uri}; available: {', '.join(names) or '(none)'}"
        )
    return found.experiment_id


def _runs_of_role(client: MlflowClient, experiment_id: str, role: str) -> list[Run]:
    where = f"tags.`{M.ROLE_TAG}` = '{role}'"
    return list(_all_pages(lambda token: client.search_runs([experiment_id], filter_string=where, page_token=token)))


def replicate_runs(client: MlflowClient, experiment_id: str) -> dict[str, str]:
    """The replicates among an experiment's study runs (`segstudy replicate`): run id -> the study run
    it replicates."""
    tagged = f"tags.`{M.REPLICATE_OF_TAG}` LIKE '%'"
    runs = _all_pages(lambda token: client.search_runs([experiment_id], filter_string=tagged, page_token=token))
    return {r.info.run_id: r.data.tags[M.REPLICATE_OF_TAG] for r in runs}


def _of_study(runs: list[Run], study: str, *, replicates: dict[str, str] | None = None) -> list[Run]:
    """Keep the trials of one study run (see `load_trials`); "latest" is the newest study that is not
    a replicate of another (a replicate is read by its own study run id)."""
    if study == ALL:
        return runs
    if study == LATEST:
        newest: dict[str, int] = {}
        originals = [r for r in runs if r.data.tags.get(M.PARENT_TAG, "") not in (replicates or {})]
        for r in originals or runs:
            parent = r.data.tags.get(M.PARENT_TAG, "")
            newest[parent] = max(newest.get(parent, 0), r.info.start_time or 0)
        if not newest:
            return runs
        study = max(newest, key=newest.__getitem__)
    chosen = [r for r in runs if r.data.tags.get(M.PARENT_TAG, "") == study]
    if not chosen:
        raise SegstudyError(f"study run '{study}': no trial runs belong to it; use 'latest', 'all' or a study run id")
    return chosen


@dataclass(frozen=True)
class PerImage:
    """A study's per-image rows, kept apart by what the model was tested on.

    Attributes:
        in_domain: the rows of each model's own data level: clean and every perturbation (what
            every in-domain analysis, robustness summary and statistic reads).
        shift: the train/test shift rows (`evaluation.shift`) together with the clean rows, i.e.
            one row per (trial, image, test level) with the training level in the factor column
            and the test level in test_<factor> (the diagonal is the clean rows); empty when no
            trial was tested at another level.
    """

    in_domain: pd.DataFrame
    shift: pd.DataFrame


def load_per_image(trials: pd.DataFrame, *, tracking_uri: str) -> pd.DataFrame:
    """Each trial's per_image.csv rows of its own data level, with its cell, seed and factor
    columns (long format); the train/test shift rows are left out (`read_per_image` has them).

    Args:
        trials: a frame from `load_trials` (any row subset of it).
        tracking_uri: the store the trials came from.

    Returns:
        One row per (trial, test image, condition): run_id, phase, cell, seed, the factor columns,
        then the per_image.csv columns (image_id, condition, dice, hd95, nsd, td, ...).
        Trials without the artifact are skipped with a warning.
    """
    return read_per_image(trials, tracking_uri=tracking_uri).in_domain


def read_per_image(trials: pd.DataFrame, *, tracking_uri: str) -> PerImage:
    """Download each trial's per_image.csv once and split its rows into in-domain and shift rows.

    The one place shift conditions ('shift:<factor>=<level>') are told from the model's own
    conditions, so no reader of `in_domain` meets one (study.metrics_names.parse_shift).
    """
    return split_shift(_download_per_image(trials, tracking_uri=tracking_uri))


def split_shift(rows: pd.DataFrame) -> PerImage:
    """Per-image rows (any conditions) -> `PerImage`; every shift factor gets its test_<factor>
    column on the shift rows, the training level wherever a run did not log one."""
    shifted = rows["condition"].map(M.is_shift).astype(bool)
    factors = sorted({M.parse_shift(c)[0] for c in rows.loc[shifted, "condition"]})  # type: ignore[index]
    if not factors:
        return PerImage(in_domain=rows, shift=rows.iloc[0:0])
    in_domain = rows[~shifted].reset_index(drop=True)
    shift = rows[shifted | (rows["condition"] == M.CLEAN)].reset_index(drop=True)
    for factor in factors:  # runs logged without the column (mixed studies) were tested at their own level
        column = M.test_level_column(factor)
        tested_at = shift[column] if column in shift.columns else pd.Series(float("nan"), index=shift.index)
        shift[column] = tested_at.where(tested_at.notna(), shift[factor])
    return PerImage(in_domain=in_domain, shift=shift)


def _download_per_image(trials: pd.DataFrame, *, tracking_uri: str) -> pd.DataFrame:
    keys = ["run_id", "phase", "cell", "seed", *factor_names(trials)]
    frames: list[pd.DataFrame] = []
    missing: list[str] = []
    process_state.quiet_artifact_downloads()  # a progress bar per download would bury the CLI's output
    with tempfile.TemporaryDirectory(prefix="segstudy-per-image-") as tmp:
        for row in trials[keys].itertuples(index=False):
            run_id = row[0]
            try:
                local = _download(run_id, tracking_uri=tracking_uri, dst=Path(tmp) / run_id)
            except Exception:  # noqa: BLE001 - MLflow raises several types for "no such artifact"
                missing.append(run_id)
                continue
            table = pd.read_csv(local)
            for position, (name, value) in enumerate(zip(keys, row, strict=True)):
                table.insert(position, name, value)
            frames.append(table)
    if missing:
        warnings.warn(
            f"{len(missing)} trial run(s) have no {M.PER_IMAGE_FILE} artifact and were skipped: "
            f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}",
            stacklevel=2,
        )
    if not frames:
        return pd.DataFrame(columns=[*keys, *M.PER_IMAGE_COLUMNS])
    return pd.concat(frames, ignore_index=True)


def not_learned_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """The trials the learning gate rejected; a trial without a verdict (tune phase, older runs)
    is not one of them."""
    if "learned" not in trials.columns:
        return trials.iloc[0:0]
    return trials[trials["learned"] == False]  # noqa: E712 - None (no verdict) is not a rejection


def factor_names(trials: pd.DataFrame) -> list[str]:
    """The factor columns of a trials frame: from `attrs`, else from the canonical cell strings."""
    if "factors" in trials.attrs:
        return list(trials.attrs["factors"])
    return sorted({name for cell in trials["cell"].dropna() for name in _cell_names(cell)})


def _client(tracking_uri: str) -> MlflowClient:
    return reading_client(tracking_uri)


def _all_pages(fetch: Callable[[str | None], Any]) -> Iterable[Any]:
    token = None
    while True:
        page = fetch(token)
        yield from page
        token = page.token
        if not token:
            return


def _nothing_found(experiment: str, runs: list[Run], *, phase: str | None, include_failed: bool) -> str:
    if not runs:
        return f"experiment '{experiment}' has no trial runs (tag {M.ROLE_TAG}={M.ROLE_TRIAL}); has the study run?"
    phases = sorted({r.data.tags.get(M.PHASE_TAG, "?") for r in runs})
    statuses = sorted({r.info.status for r in runs})
    wanted = f"phase '{phase}'" if phase else "any phase"
    finished = "" if include_failed else f" and status {FINISHED}"
    return (
        f"experiment '{experiment}' has no trial runs with {wanted}{finished}; "
        f"found {len(runs)} trial run(s) with phases {', '.join(phases)} and statuses {', '.join(statuses)}"
    )


def _frame(runs: list[Run]) -> pd.DataFrame:
    factors = sorted({name for run in runs for name in _run_factors(run)})
    hparams = sorted({p for run in runs for p in run.data.params} - set(factors) - {"seed"})
    metrics = sorted({*M.TEST_METRICS, *(m for run in runs for m in run.data.metrics if m.startswith(M.TEST_PREFIX))})
    rows = []
    for run in runs:
        tags, params = run.data.tags, run.data.params
        row: dict[str, Any] = {
            "run_id": run.info.run_id,
            "status": run.info.status,
            "phase": tags.get(M.PHASE_TAG),
            "cell": tags.get(M.CELL_TAG),
            "seed": _seed(run),
        }
        row.update({name: params.get(name) for name in factors})
        row.update({_column(name): params.get(name) for name in hparams})
        row.update({name: run.data.metrics.get(name, float("nan")) for name in metrics})
        row["error"] = tags.get(M.ERROR_TAG)
        verdict = tags.get(M.LEARNED_TAG)  # the learning gate; None for tune trials and older runs
        row["learned"] = None if verdict is None else verdict == "true"
        row["learning_issue"] = tags.get(M.LEARNING_ISSUE_TAG)
        rows.append(row)
    frame = pd.DataFrame(rows)
    for name in [*factors, *map(_column, hparams)]:
        frame[name] = _typed(frame[name])
    frame["seed"] = frame["seed"].astype("int64")
    frame = frame.sort_values(["phase", "cell", "seed", "run_id"], ignore_index=True)
    frame.attrs["factors"] = factors
    frame.attrs["hyperparameters"] = [_column(h) for h in hparams]
    return frame


def _run_factors(run: Run) -> list[str]:
    raw = run.data.tags.get(M.FACTORS_TAG)
    if raw is None:  # older runs: the canonical cell string names the factors too
        return _cell_names(run.data.tags.get(M.CELL_TAG, ""))
    return list(json.loads(raw))


def _cell_names(cell: str) -> list[str]:
    return [part.split("=", 1)[0] for part in cell.split(",") if "=" in part]


def _seed(run: Run) -> int:
    raw = run.data.tags.get(M.SEED_TAG, run.data.params.get("seed"))
    if raw is None:
        raise SegstudyError(f"trial run {run.info.run_id} has neither tag {M.SEED_TAG} nor param 'seed'")
    return int(float(raw))


def _column(param: str) -> str:
    return f"param.{param}" if param in BASE_COLUMNS or param in ("error", "learned", "learning_issue") else param


def _typed(values: pd.Series) -> pd.Series:
    """Numbers as float (alpha "0.1" -> 0.1, batch_size "8" -> 8.0); anything else stays text."""
    try:
        return pd.to_numeric(values).astype("float64")
    except (ValueError, TypeError):
        return values.astype("string")


def _download(run_id: str, *, tracking_uri: str, dst: Path) -> Path:
    from mlflow.artifacts import download_artifacts

    dst.mkdir(parents=True, exist_ok=True)
    local = download_artifacts(run_id=run_id, artifact_path=M.PER_IMAGE_FILE, dst_path=str(dst), tracking_uri=tracking_uri)
    return Path(local)


__all__ = ["PerImage", "factor_names", "load_per_image", "load_trials", "read_per_image", "split_shift", "study_runs", "trial_runs"]
