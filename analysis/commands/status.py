"""`segstudy status NAME`: where a study stands, per cell and phase, read from MLflow."""

from __future__ import annotations

import json

import pandas as pd

from analysis.read.runs import LATEST, trial_runs
from study import metrics_names as M
from study.tracking import reading_client
from study.tracking.ui_links import browse

COLUMNS = ("cell", "phase", "done", "running", "stopped_early", "failed", "not_learned", "seeds", "best_val_dice")


def study_status(experiment: str, *, tracking_uri: str, study: str = LATEST) -> pd.DataFrame:
    """Counts of trials per cell and phase, and the best validation Dice reached.

    `done` counts trials that ran their full schedule, `stopped_early` those ended by early
    stopping, `failed` crashed or diverged attempts (a retried trial counts once per attempt),
    `not_learned` finished confirm trials whose model the learning gate rejected, `seeds` the
    distinct seeds of the cell's finished confirm trials (0 on tune rows).
    `gpu_util_mean` (only when some trial ran on CUDA): the GPU's utilisation while the cell's
    trials ran, each trial weighted by its samples; running trials count with what they logged so far.

    The frame's ``attrs`` hold ``browse``: where to see the study in the MLflow UI (its study run's
    page, or the experiment's runs table when several study runs are shown), and for a study with
    a sequential confirm phase ``rounds``: its round, the comparisons resolved and those open.
    """
    rows = []
    runs = trial_runs(experiment, tracking_uri=tracking_uri, study=study)
    for run in runs:
        tags = run.data.tags
        status = run.info.status
        early = tags.get(M.STOPPED_EARLY_TAG) == "true"
        rows.append(
            {
                "cell": tags.get(M.CELL_TAG, "?"),
                "phase": tags.get(M.PHASE_TAG, "?"),
                "done": status == "FINISHED" and not early,
                "running": status == "RUNNING",
                "stopped_early": status == "FINISHED" and early,
                "failed": status in {"FAILED", "KILLED"},
                "not_learned": tags.get(M.LEARNED_TAG) == "false",
                "seeds": tags.get(M.SEED_TAG) if status == "FINISHED" and tags.get(M.PHASE_TAG) == M.PHASE_CONFIRM else None,
                "best_val_dice": run.data.metrics.get(M.BEST_VAL_DICE, float("nan")),
                **_gpu_weight(run.data.metrics),
            }
        )
    frame = pd.DataFrame(rows, columns=[*COLUMNS, *_GPU_WEIGHTS])
    counts = frame.groupby(["cell", "phase"], sort=True).agg(
        done=("done", "sum"),
        running=("running", "sum"),
        stopped_early=("stopped_early", "sum"),
        failed=("failed", "sum"),
        not_learned=("not_learned", "sum"),
        seeds=("seeds", "nunique"),
        best_val_dice=("best_val_dice", "max"),
        gpu_util_sum=("gpu_util_sum", "sum"),
        gpu_util_samples=("gpu_util_samples", "sum"),
    )
    samples = counts.pop("gpu_util_samples")
    util = counts.pop("gpu_util_sum") / samples.where(samples > 0)
    if samples.gt(0).any():  # a CPU study keeps the table it always had
        counts[M.GPU_UTIL_MEAN] = util
    table = counts.reset_index().sort_values(["phase", "cell"], key=_phase_order).reset_index(drop=True)
    parents = {r.data.tags.get(M.PARENT_TAG) for r in runs}
    if runs:
        parent = parents.pop() if len(parents) == 1 else None
        table.attrs["browse"] = browse(tracking_uri, runs[0].info.experiment_id, parent)
        if parent:
            rounds = reading_client(tracking_uri).get_run(parent).data.tags.get(M.ROUNDS_TAG)
            if rounds:
                table.attrs["rounds"] = rounds_line(rounds)
    return table


def rounds_line(tag: str) -> str:
    """The round state a sequential confirm phase tags on its study run, as one line, e.g.
    'sequential confirm: round 3 of up to 8 (5 seeds per cell), 4 of 6 declared claims resolved; open: (a) noskip_unet - unet, alpha 0.1 -> 0.93'."""
    try:
        state = json.loads(tag)
        where = "finished after round" if state["finished"] else "round"
        total = state.get("claims", state.get("comparisons"))  # studies before declared claims counted comparisons
        line = (f"sequential confirm: {where} {state['round']} of up to {state['rounds']} ({state['seeds']} seeds per "
                f"cell), {state['resolved']} of {total} declared claims resolved")
        if state.get("not_learned"):
            line += f", {state['not_learned']} closed (a model did not learn)"
        if state.get("futile"):
            line += f", {state['futile']} closed as futile"
    except (json.JSONDecodeError, KeyError, TypeError):
        return f"sequential confirm: unreadable round state ({tag[:80]})"
    open_ = [*state.get("open", []), *([f"{state['more_open']} more"] if state.get("more_open") else [])]
    if open_:
        line += f"; {'unresolved at max seeds' if state['finished'] else 'open'}: {'; '.join(open_)}"
    return line


_GPU_WEIGHTS = ("gpu_util_sum", "gpu_util_samples")


def _gpu_weight(metrics: dict[str, float]) -> dict[str, float]:
    """A trial's GPU utilisation as (mean x samples, samples), so cells can weigh trials by time."""
    samples = metrics.get(M.GPU_UTIL_SAMPLES, 0.0)
    mean = metrics.get(M.GPU_UTIL_MEAN, float("nan"))
    if not samples or mean != mean:
        return {"gpu_util_sum": 0.0, "gpu_util_samples": 0.0}
    return {"gpu_util_sum": mean * samples, "gpu_util_samples": samples}


def _phase_order(col: pd.Series) -> pd.Series:
    return col.map({M.PHASE_TUNE: 0, M.PHASE_CONFIRM: 1}).fillna(col) if col.name == "phase" else col
