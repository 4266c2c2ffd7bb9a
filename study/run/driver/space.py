"""What a study writes to disk, estimated before it starts, and the check of that against the free
space of the disks it writes to (`segstudy run` and `segstudy resume`); and a full disk met by the
driver outside a Tune phase, turned into the same stop as one met inside (`full_disk_stops`).

A study that fills its disk stops as interrupted and resumable (docs/ARCHITECTURE.md 3,
"Stopping"), but one that cannot finish on the space it has is better refused before it starts.
The estimate is built from the preflight (the bytes of each network's weights) and the data (how
many images each confirm model is tested on), so it follows the study: a confirm trial keeps its
weights twice in its Tune checkpoint (the package and the MLflow model made from it) and its
per-image table; a local MLflow store gets the model and tables again as artifacts, and a row per
metric value. Where the confirm phase restores a tune trial's training (`study.training.reuse`),
a tune trial that runs its whole schedule keeps its weights once; the estimate counts that for
every tune trial.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from study import disk, process_state
from study.errors import SegstudyError
from study.run.cluster.capacity import cluster_capacity
from study.run.driver.preflight import Preflight, input_key
from study.spec import StudySpec
from study.spec.cells import expand_cells
from study.tracking import StudyTracker
from study.training.inputs.study_data import StudyData, data_key
from study.training.reuse import restores

ROW_BYTES = 200  # one per_image.csv row: image, condition and every score
METRIC_BYTES = 300  # one metric value in a SQLite store, with its indexes
TRIAL_BYTES = 256 * 1024  # a trial's Tune folder (params, result, error), its tags and params, its log lines
STUDY_BYTES = 16 * 1024**2  # the study log, Optuna's storage, Tune's experiment state, the summary and report
EPOCH_METRICS = 3  # train loss, validation Dice and its best so far, per epoch
FINAL_METRICS = 6  # per condition: Dice, HD95, NSD, ASSD, coverage, FNR


@dataclass(frozen=True)
class Writes:
    """Bytes written to the study folder and to a local (SQLite) MLflow store and its artifacts."""

    folder: int = 0
    store: int = 0

    def __add__(self, other: Writes) -> Writes:
        return Writes(self.folder + other.folder, self.store + other.store)

    def __mul__(self, n: int) -> Writes:
        return Writes(self.folder * n, self.store * n)

    @property
    def total(self) -> int:
        return self.folder + self.store


@dataclass(frozen=True)
class StudyWrites:
    """The estimate of one study: all of it, and the most its trials running at once write."""

    whole: Writes
    at_once: Writes


def estimate_writes(spec: StudySpec, data: StudyData, checked: Preflight, *, at_once: int) -> StudyWrites:
    """What the study writes, from the preflight's weights and the data's split sizes.

    Args:
        at_once: trials the cluster runs at once.
    """
    tuning = spec.tuning
    tune_epochs = (tuning.early_stopping.max_t or spec.training.epochs) if tuning is not None else 0
    conditions = 1 + len(spec.evaluation.perturbations) * len(spec.evaluation.severities)
    whole, largest = Writes(), Writes()
    for cell in expand_cells(spec):
        level = data[data_key(spec, cell)]
        rows = (len(level.calib) + len(level.test)) * conditions + sum(len(s.split) for s in level.shifted)
        weights = checked.timings[input_key(spec, cell)].state_bytes
        metrics = spec.training.epochs * EPOCH_METRICS + (conditions + len(level.shifted)) * FINAL_METRICS
        confirm = Writes(folder=2 * weights + rows * ROW_BYTES + TRIAL_BYTES,
                         store=weights + rows * ROW_BYTES + metrics * METRIC_BYTES)
        tune = Writes(folder=TRIAL_BYTES + weights * restores(spec), store=tune_epochs * EPOCH_METRICS * METRIC_BYTES)
        whole = whole + confirm * len(spec.confirm_seeds) + (tune * tuning.trials_per_cell if tuning else Writes())
        largest = max(largest, confirm, key=lambda w: w.total)
    return StudyWrites(whole=whole, at_once=largest * max(1, at_once))


def check_space(folder: Path, store: Path | None, need: Writes, *, what: str) -> None:
    """Refuse when the disk of the study folder (or of a local MLflow store) has less free space
    than `need` of it, plus `STUDY_BYTES`; two paths on one disk need the sum.

    Args:
        folder: the study folder, or the storage folder it will be made in.
        store: the SQLite file of a local MLflow store; None for a server or database.
        what: who writes it, for the message ("the study", "its next 2 trials").

    Raises:
        study.disk.NoSpaceError: naming the path, its free space and the estimate.
    """
    same = store is not None and disk.same_disk(folder, store)
    folder_need = (need.total if same else need.folder) + STUDY_BYTES
    parts = "checkpoints, models, per-image tables and logs" + (", and its MLflow store" if same else "")
    disk.require_free(folder, folder_need, what=f"{what} writes about {disk.size_text(folder_need)} there ({parts})")
    if store is not None and not same:
        disk.require_free(store.parent, need.store, what=f"{what} writes about {disk.size_text(need.store)} to its MLflow store")


SpaceCheck = Callable[[StudySpec, Any, Preflight], None]


def space_check(folder: Path, tracker: StudyTracker, *, whole: bool) -> SpaceCheck:
    """The free-space check of `run` (the whole study must fit) or `resume` (the trials it runs at
    once must: the rest may be done), called with the data and the preflight once Ray is up."""

    def check(spec: StudySpec, data: Any, checked: Preflight) -> None:
        at_once = cluster_capacity(spec)
        writes = estimate_writes(spec, data, checked, at_once=at_once)
        what = "the study" if whole else f"resuming ({at_once} trial(s) at once)"
        check_space(folder, tracker.local_store, writes.whole if whole else writes.at_once, what=what)

    return check


@contextlib.contextmanager
def full_disk_stops(where: list[Path | None]) -> Iterator[None]:
    """A full disk met outside a Tune phase (making the study folder, moving its log, opening the
    study run) stops the study as one met inside does: `Interrupted` with its cause, no traceback.
    `where`: the paths the driver writes to (the one on the fullest disk is named)."""
    try:
        yield
    except SegstudyError:
        raise
    except Exception as exc:
        cause = disk.no_space_cause(exc, where=where)
        if cause is None:
            raise
        raise process_state.interrupted_by_full_disk(cause) from None


__all__ = ["SpaceCheck", "StudyWrites", "Writes", "check_space", "estimate_writes", "full_disk_stops", "space_check"]
