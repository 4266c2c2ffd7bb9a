"""Where tune trials keep their trainings for the confirm trials that repeat them (`study.training.reuse`).

The folder `kept_training/` of the study's storage (the study folder, or its folder in a bucket),
one file per training, named by its identity. The tune trial that trained it writes it whole (to a
temporary name, then moved into place), and the confirm trial of the same name reads it. A file that
is missing, partial or from another version is not an error: the confirm trial then trains, as it
would without this. A full disk is an error, the same stop as anywhere else.
"""

from __future__ import annotations

import logging
import os
from typing import Any, NamedTuple

from study import disk
from study.run.tune.tune_report import study_storage
from study.spec import StudySpec
from study.training.inputs.study_data import StudyData
from study.training.plan import TrialPlan
from study.training.reuse import Kept, identity, pack, restore, restores, unpack
from study.training.trial import Trained

log = logging.getLogger(__name__)

FOLDER = "kept_training"


def keep(trained: Trained, *, plan: TrialPlan, spec: StudySpec, epochs: list[dict[str, float]]) -> None:
    """Keep a tune trial's finished training where the confirm trial of its name will look (only
    where one will: `restores`)."""
    storage = study_storage() if restores(spec) else None
    if storage is None:
        return
    filesystem, root = storage
    name, blob = pack(trained, plan=plan, spec=spec, epochs=epochs)
    folder = f"{root}/{FOLDER}"
    temporary = f"{folder}/.{name}.{os.getpid()}.tmp"
    try:
        filesystem.create_dir(folder, recursive=True)
        with filesystem.open_output_stream(temporary) as out:
            out.write(blob)
        filesystem.move(temporary, f"{folder}/{name}.pt")
    except OSError as exc:
        _remove_quietly(filesystem, temporary)  # a part written before a full disk gives its space back
        if disk.no_space(exc):
            raise
        log.warning("%s: training not kept (%s); the confirm trial of its seed trains again", plan.key, exc)


def _remove_quietly(filesystem: Any, path: str) -> None:
    try:
        filesystem.delete_file(path)
    except OSError:
        pass  # never written, or the error that brought us here stands for it


class Restored(NamedTuple):
    trained: Trained  # ready to calibrate and test
    kept: Kept  # what was kept: the epochs to log, the tune trial's key


def kept_for(plan: TrialPlan, *, spec: StudySpec, data: StudyData) -> Restored | None:
    """The training a tune trial kept under this plan's name, restored; None when there is none
    to use (the trial then trains)."""
    tuning_seed = spec.tuning.seed if spec.tuning is not None else None
    storage = study_storage() if restores(spec) and plan.seed == tuning_seed else None
    if storage is None:
        return None
    filesystem, root = storage
    name = identity(plan, spec)
    path = f"{root}/{FOLDER}/{name}.pt"
    try:
        if filesystem.get_file_info(path).type.name != "File":  # pyarrow's FileType, by name: pyarrow is study.storage's
            return None
        with filesystem.open_input_stream(path) as source:
            blob = source.readall()
        kept = unpack(blob, name=name, epochs=spec.training.epochs)
        return Restored(restore(kept, plan, spec=spec, data=data), kept)
    except (OSError, ValueError, RuntimeError) as exc:  # RuntimeError: weights that do not fit the network
        log.warning("%s: kept training %s not used (%s); training instead", plan.key, path, exc)
        return None


__all__ = ["FOLDER", "Restored", "keep", "kept_for"]
