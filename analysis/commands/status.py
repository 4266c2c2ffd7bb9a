"""`segstudy status NAME`: where a study stands, as a whole and per cell and phase, read from
MLflow and, for whether its driver lives, from the lock in its study folder (`study.driver_lock`).

MLflow alone cannot tell a running study from one whose driver was killed or whose machine went
away: both leave the study run RUNNING. The driver holds an OS lock in its study folder while it
lives, and the kernel drops it however the driver dies, so asking for the lock (read-only) tells
them apart wherever the folder is reachable.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from mlflow.entities import Run

from analysis.read.runs import ALL, LATEST, study_runs, trial_runs
from study import driver_lock
from study import metrics_names as M
from study.tracking import reading_client
from study.tracking.ui_links import browse

COLUMNS = ("cell", "phase", "done", "running", "stopped_early", "failed", "interrupted", "not_learned", "seeds",
           "best_val_dice")


def study_status(experiment: str, *, tracking_uri: str, study: str = LATEST) -> pd.DataFrame:
    """Counts of trials per cell and phase, and the best validation Dice reached.

    `done` counts trials that ran their full schedule, `stopped_early` those ended by early
    stopping, `running` those running while a driver lives, `failed` attempts that failed by
    their own doing (a crash of their code, a diverged loss; a retried trial counts once per
    attempt), `interrupted` attempts a stop cut, a driver left behind when it died, or a fault of
    the machine failed (killed worker, lost node, full disk): `segstudy resume` runs them again.
    `not_learned` counts finished confirm trials whose model the learning gate rejected, `seeds`
    the distinct seeds of the cell's finished confirm trials (0 on tune rows).
    `gpu_util_mean` (only when some trial ran on CUDA): the GPU's utilisation while the cell's
    trials ran, each trial weighted by its samples; running trials count with what they logged so far.

    The frame's ``attrs`` hold ``state``: one line per study run shown saying where it stands
    (`StudyState.line`), ``browse``: where to see the study in the MLflow UI (its study run's
    page, or the experiment's runs table when several study runs are shown), and for a study with
    a sequential confirm phase ``rounds``: its round, the comparisons resolved and those open.
    """
    rows = []
    parents = _study_runs_of(experiment, tracking_uri=tracking_uri, study=study)
    if parents is None:  # trial runs without a study run (made by hand): the newest trials' study, as before
        runs, states = trial_runs(experiment, tracking_uri=tracking_uri, study=study), {}
    else:
        ids = {p.info.run_id for p in parents}
        runs = [r for r in trial_runs(experiment, tracking_uri=tracking_uri, study=ALL) if r.data.tags.get(M.PARENT_TAG) in ids]
        states = {p.info.run_id: StudyState.of(p, runs) for p in parents}
    for run in runs:
        tags = run.data.tags
        status = run.info.status
        early = tags.get(M.STOPPED_EARLY_TAG) == "true"
        state = states.get(tags.get(M.PARENT_TAG, ""))
        alive = state is None or state.driver_alive is not False  # unknown (folder elsewhere): MLflow's word
        cut = status == "KILLED" or (status == "RUNNING" and not alive) or (status == "FAILED" and _machine_fault(run))
        rows.append(
            {
                "cell": tags.get(M.CELL_TAG, "?"),
                "phase": tags.get(M.PHASE_TAG, "?"),
                "done": status == "FINISHED" and not early,
                "running": status == "RUNNING" and alive,
                "stopped_early": status == "FINISHED" and early,
                "failed": status == "FAILED" and not cut,
                "interrupted": cut,
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
        interrupted=("interrupted", "sum"),
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
    table.attrs["state"] = [state.line for state in states.values()]
    shown = {r.data.tags.get(M.PARENT_TAG) for r in runs} | set(states)
    if runs or states:
        parent = shown.pop() if len(shown) == 1 else None
        experiment_id = (runs or parents or [None])[0].info.experiment_id  # type: ignore[union-attr]
        table.attrs["browse"] = browse(tracking_uri, experiment_id, parent)
        if parent:
            rounds = reading_client(tracking_uri).get_run(parent).data.tags.get(M.ROUNDS_TAG)
            if rounds:
                table.attrs["rounds"] = rounds_line(rounds)
    return table


def _study_runs_of(experiment: str, *, tracking_uri: str, study: str) -> list[Run] | None:
    """The study runs shown: the newest (latest), every one (all), or the one named; None when the
    experiment has no study run at all."""
    parents = study_runs(experiment, tracking_uri=tracking_uri)
    if not parents:
        return None
    if study == LATEST:
        return parents[:1]
    if study == ALL:
        return parents
    chosen = [p for p in parents if p.info.run_id == study]
    if not chosen:
        from study.errors import SegstudyError

        raise SegstudyError(f"study run '{study}': not a study run of '{experiment}'; use 'latest', 'all' or a study run id")
    return chosen


def _machine_fault(run: Run) -> bool:
    return run.data.tags.get(M.FAULT_TAG) == M.FAULT_MACHINE


@dataclass(frozen=True)
class StudyState:
    """Where one study run stands.

    Attributes:
        line: e.g. 'study run demo-20260101-120000: running: pid 4242 on node-1 since 2026-01-01
            12:00:00 (run)' or '...: interrupted by SIGINT at 2026-01-01 12:03:10; `segstudy
            resume /abs/ray_results/demo-20260101-120000` continues'.
        driver_alive: True or False when the study folder could be asked (here, or over a shared
            file system), None when it is not reachable from this machine.
    """

    line: str
    driver_alive: bool | None

    @classmethod
    def of(cls, study_run: Run, trials: list[Run]) -> StudyState:
        tags, info = study_run.data.tags, study_run.info
        folder = tags.get(M.STUDY_DIR_TAG)
        here = folder is not None and Path(folder).is_dir()
        holder = driver_lock.holder(Path(folder)) if here else None
        alive = (holder is not None) if here else None
        resume = f"`segstudy resume {folder}`" if folder else "`segstudy resume NAME`"
        when = _when(info.end_time)
        if info.status == "RUNNING":
            if holder is not None:
                where = f"running: {holder}"
            elif here:
                where = f"driver gone without clean-up (killed, or its machine lost); resumable: {resume} continues"
            else:
                where = (f"running according to MLflow; its study folder {folder or '(not recorded)'} is not on this "
                         "machine, so whether its driver lives cannot be checked here")
        elif info.status == "KILLED" or tags.get(M.STATE_TAG) == M.STATE_INTERRUPTED:
            by = tags.get(M.STOP_SIGNAL_TAG, "a stop")
            then = "free space, then " if by.startswith("no space") else ""
            where = f"interrupted by {by} at {when}; {then}{resume} continues"
        elif info.status == "FINISHED":
            where = f"finished at {when}"
        else:
            own = [r for r in trials if r.data.tags.get(M.PARENT_TAG) == info.run_id]
            lost = sum(r.info.status == "FAILED" and _machine_fault(r) and r.data.tags.get(M.RETRIED_TAG) != "true"
                       for r in own)
            where = f"ended with failed trials at {when}; " + (
                f"{lost} failed by a fault of the machine: {resume} runs them again" if lost
                else f"{resume} --retry-failed runs them again")
        if holder is not None and info.status != "RUNNING":
            where += f" (a driver is at it now: {holder})"
        return cls(line=f"study run {info.run_name or info.run_id}: {where}", driver_alive=alive)


def _when(ms: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000)) if ms else "?"


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
        if state.get("censored"):
            line += f", {state['censored']} closed (a model at the trivial answer out of domain)"
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
