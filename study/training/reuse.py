"""A tune trial's training, kept for the confirm trial that would repeat it.

Every tune trial trains under the tuning seed. When the confirm seeds include that seed, the confirm
trial of a cell's chosen configuration is the winning tune trial over again: the same cell, seed,
hyperparameters, data and recipe. On a CPU training is deterministic, so it would make the same
weights bit for bit. So a tune trial that ran its whole schedule keeps what its training left: the
weights the spec tests, the validation curve, each epoch's values and the training patches'
foreground shares. It keeps them under a name made from everything that decides the training
(`identity`). The confirm trial of that name restores them and goes on to calibrate and test. The
study's numbers do not change, and each cell trains once less. On a GPU, where cuDNN's kernels are
not bit-reproducible, the confirm trial's seed is that one training instead of a second, equally
valid one.

This module packs and restores; where the bytes live is the trainable's business
(`study.run.tune.kept_training`).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from dataclasses import dataclass
from typing import Any

import torch

from study.spec import StudySpec
from study.training.inputs.strategies import Patches
from study.training.inputs.study_data import StudyData
from study.training.plan import TrialPlan
from study.training.trial import Trained, build_model, inputs_on, prepared_device

FORMAT = 1  # bump when the packed layout changes: an older file is then not restored, only retrained


def restores(spec: StudySpec) -> bool:
    """Whether the study's confirm phase restores a tune trial's training: it tunes, its tune trials
    run the whole schedule (no `max_t` cut short), and its confirm seeds include the tuning seed.
    Otherwise no tune trial keeps anything and no confirm trial looks."""
    tuning = spec.tuning
    if tuning is None:
        return False
    full = (tuning.early_stopping.max_t or spec.training.epochs) >= spec.training.epochs
    return full and tuning.seed in spec.confirm_seeds


def identity(plan: TrialPlan, spec: StudySpec) -> str:
    """The name of a plan's training: the whole spec (data, network, recipe, threads), the cell,
    the seed and the hyperparameters; not the phase or the Optuna trial number, which change
    nothing in it. Two plans of one name train the same weights on one CPU."""
    what = {
        "format": FORMAT,
        "spec": spec.model_dump(mode="json"),
        "cell": plan.cell,
        "seed": plan.seed,
        "hparams": plan.hparams.model_dump(mode="json"),
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Kept:
    """A training as the confirm trial restores it. `key`: the tune trial that trained it
    (`TrialPlan.key`); `epochs`: each epoch's values as that trial reported them."""

    name: str
    key: str
    state_dict: dict[str, torch.Tensor]
    best_val: float
    val_curve: list[float]
    epochs: list[dict[str, float]]
    peak_memory_mb: float
    gpu: dict[str, float]
    patch_foreground: list[float] | None


def pack(trained: Trained, *, plan: TrialPlan, spec: StudySpec, epochs: list[dict[str, float]]) -> tuple[str, bytes]:
    """(name, bytes) of a finished training: a torch file of tensors and plain values only."""
    patches = trained.inputs.patch_foreground if isinstance(trained.inputs, Patches) else None
    payload = {
        "format": FORMAT,
        "name": identity(plan, spec),
        "key": plan.key,
        "state_dict": {k: v.detach().cpu() for k, v in trained.model.state_dict().items()},
        "best_val": float(trained.best_val),
        "val_curve": [float(v) for v in trained.val_curve],
        "epochs": [{k: float(v) for k, v in epoch.items()} for epoch in epochs],
        "peak_memory_mb": float(trained.peak_memory_mb),
        "gpu": {k: float(v) for k, v in trained.gpu.items()},
        "patch_foreground": None if patches is None else [float(v) for v in patches],
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return payload["name"], buffer.getvalue()


def unpack(blob: bytes, *, name: str, epochs: int) -> Kept:
    """The training packed in `blob`, checked to be `name`'s and whole (`epochs` of them).

    Raises:
        ValueError: not a packed training of this name and format (a partial write, another
            version of segstudy, another file): the caller trains instead.
    """
    try:
        payload = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)  # a shared store: no code runs
    except Exception as exc:  # noqa: BLE001 - any unreadable file is "not kept"; the trial trains instead
        raise ValueError(f"unreadable ({type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or payload.get("name") != name:
        raise ValueError("another format or training")
    try:
        kept = Kept(**{field: payload[field] for field in Kept.__dataclass_fields__})
        whole = len(kept.epochs) == epochs and len(kept.val_curve) == epochs and math.isfinite(kept.best_val)
    except (KeyError, TypeError) as exc:  # a field missing or of another kind
        raise ValueError(f"malformed ({type(exc).__name__}: {exc})") from None
    if not whole:
        raise ValueError(f"{len(kept.epochs)} of {epochs} epochs")
    return kept


def restore(kept: Kept, plan: TrialPlan, *, spec: StudySpec, data: StudyData) -> Trained:
    """The `Trained` that `train_plan(plan)` returned in the tune trial, rebuilt from `kept`: the
    network in its layout with the kept weights, in eval mode as validation left it."""
    device = prepared_device(spec)  # the threads training would have set: testing runs on them
    model = build_model(plan, level=data[plan.data_key], device=device)
    model.load_state_dict(kept.state_dict)
    model.eval()
    inputs = inputs_on(plan, spec, device)
    if isinstance(inputs, Patches):
        inputs.patch_foreground = list(kept.patch_foreground or [])
    return Trained(
        model=model, best_val=kept.best_val, inputs=inputs, peak_memory_mb=kept.peak_memory_mb,
        val_curve=list(kept.val_curve), gpu=dict(kept.gpu),
    )


__all__ = ["FORMAT", "Kept", "identity", "pack", "restore", "restores", "unpack"]
