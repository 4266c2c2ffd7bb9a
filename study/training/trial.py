"""One trial's work, without Ray or MLflow: build the cell's network, train, validate, test.

`run_plan` is what a confirm trial does and `train_plan` what a tune trial does; the Ray trainable
(`study.run.tune.trainable`) and the benchmarks call them with data built once. The errors below are the
ones a trial ends FAILED with instead of being retried.
"""

from __future__ import annotations

import contextlib
import copy
import math
import resource
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from study import metrics_names as M
from study import process_state
from study.conformal import Calibration
from study.data import LevelData, Split
from study.errors import first_line
from study.metrics import METRICS
from study.models import build_network, memory_format
from study.spec import StudySpec
from study.training.device.accelerator import prepare_device, resident, resolve_precision
from study.training.evaluation.calibrated import coverage_metrics, evaluate_with_bounds
from study.training.evaluation.conditions import condition_metrics, with_test_levels
from study.training.inputs.strategies import Patches, WholeImages
from study.training.evaluation.learning import Verdict, blind_baseline, judge
from study.training.loop import build_loss, build_optimizer, build_schedule, train_one_epoch
from study.training.evaluation.evaluate import dice_of
from study.training.device.gpu_monitor import sampler_for
from study.training.plan import TrialPlan
from study.training.inputs.study_data import StudyData


# Errors raised by the trial's own code: they would repeat on every retry (torch reports shape and
# dtype mismatches as RuntimeError). A killed worker never raises here: Tune sees the actor die.
DETERMINISTIC = (RuntimeError, ValueError, TypeError, IndexError, KeyError, AssertionError, NotImplementedError)


class TrialFailure(RuntimeError):
    """A failure that would repeat on every retry: the trial ends FAILED with this reason."""


class LossDivergedError(TrialFailure):
    """The training loss became NaN or infinite."""


class TrialOutOfMemoryError(TrialFailure):
    """The trial ran out of (GPU or host) memory."""


@dataclass
class Trained:
    model: torch.nn.Module
    best_val: float
    inputs: WholeImages | Patches
    peak_memory_mb: float
    val_curve: list[float]
    gpu: dict[str, float]  # study.training.device.gpu_monitor figures; empty on CPU


@dataclass
class PlanResult:
    """What a confirm trial leaves: final metrics, per-image table, weights, training-patch stats,
    its conformal calibration and the coverage measured on test."""

    metrics: dict[str, float]
    per_image: pd.DataFrame
    state_dict: dict[str, Any]
    patch_foreground: list[float] | None
    calibration: Calibration
    coverage: pd.DataFrame
    verdict: Verdict


def input_strategy(plan: TrialPlan, spec: StudySpec) -> WholeImages | Patches:
    if plan.patch_size is None:
        return WholeImages(batch_size=plan.hparams.batch_size)
    return Patches(
        batch_size=plan.hparams.batch_size,
        patch_size=plan.patch_size,
        pos_fraction=float(plan.pos_fraction),
        samples_per_volume=spec.patch_defaults.samples_per_volume,
        sw_batch_size=spec.inference.sw_batch_size,
        overlap=spec.inference.overlap,
    )


def train_plan(
    plan: TrialPlan, *, spec: StudySpec, data: StudyData, on_epoch: Callable[[dict[str, float]], None] | None = None
) -> Trained:
    """Train one plan for spec.training.epochs, validating each epoch.

    Returns:
        the model holding the weights the spec says to test, the best validation Dice, the input
        strategy (with the training patches' foreground shares), the peak memory seen and, on CUDA,
        the GPU's utilisation while it trained (also in every epoch's `on_epoch` values).

    Raises:
        LossDivergedError: the loss became NaN or infinite.
    """
    torch.manual_seed(plan.seed)
    device = prepared_device(spec)
    level = data[plan.data_key]
    model = build_model(plan, level=level, device=device)
    optimizer = build_optimizer(model, plan.hparams)
    loss_fn = build_loss(spec.training)
    inputs = inputs_on(plan, spec, device)
    train, val_split = _sources(inputs, level, device, spec)
    schedule = build_schedule(optimizer, spec.training, steps_per_epoch=inputs.steps(train))
    rng = np.random.default_rng([plan.seed, 7919])
    memory = PeakMemory(device)
    best_dice, best_state = -1.0, None
    curve: list[float] = []
    with sampler_for(device) as gpu:
        for epoch in range(1, spec.training.epochs + 1):
            with out_of_memory_as_failure(epoch, device):
                loss = train_one_epoch(
                    model, optimizer, loss_fn, inputs.batches(train, rng), device=device, amp=inputs.amp,
                    schedule=schedule, grad_clip=spec.training.grad_clip,
                )
                if not math.isfinite(loss):
                    raise LossDivergedError(f"loss diverged at epoch {epoch}")
                probs = inputs.predict(model, val_split, device=device)
                val = dice_of(probs, level.val, threshold=spec.evaluation.threshold)
            memory.sample()
            curve.append(val)
            if val > best_dice:
                best_dice, best_state = val, copy.deepcopy(model.state_dict())
            figures = _gpu_figures(gpu.snapshot(), memory)
            if on_epoch is not None:
                on_epoch({M.EPOCH: epoch, M.TRAIN_LOSS: loss, M.VAL_DICE: val, M.BEST_VAL_DICE: best_dice, **figures})
    if spec.training.test_weights == "best" and best_state is not None:
        model.load_state_dict(best_state)
    return Trained(
        model=model, best_val=best_dice, inputs=inputs, peak_memory_mb=memory.peak_mb, val_curve=curve,
        gpu=_gpu_figures(gpu.snapshot(), memory),
    )


def build_model(plan: TrialPlan, *, level: LevelData, device: torch.device) -> torch.nn.Module:
    """The cell's network for the level's input size, on `device`, in the memory layout its family
    trains fastest in there (`study.models.memory_format`)."""
    spatial_dims, in_channels, img_size = network_input(plan, level)
    return build_network(
        plan.arch, spatial_dims=spatial_dims, in_channels=in_channels, out_channels=1, img_size=img_size
    ).to(device, memory_format=memory_format(plan.arch, spatial_dims=spatial_dims, device=device))


def inputs_on(plan: TrialPlan, spec: StudySpec, device: torch.device) -> WholeImages | Patches:
    """The plan's input strategy with the autocast dtype of `device` (None on CPU unless bf16 is asked for)."""
    inputs = input_strategy(plan, spec)
    inputs.amp = resolve_precision(spec.training.precision, device)
    return inputs


def _sources(inputs: WholeImages | Patches, level: LevelData, device: torch.device, spec: StudySpec) -> tuple[Any, Any]:
    """Train and validation splits as the trial reads them: kept on the GPU when whole images fit
    (no per-step host copies, study.training.device.accelerator), else the host arrays (always on CPU)."""
    if not isinstance(inputs, WholeImages):
        return level.train, level.val  # patches are cropped on the host from volumes of any size
    share = spec.resources.gpu
    return (
        resident(level.train, device, gpu_share=share) or level.train,
        resident(level.val, device, gpu_share=share) or level.val,
    )


def _gpu_figures(sampled: dict[str, float], memory: PeakMemory) -> dict[str, float]:
    """The GPU metrics of a trial so far: NVML's figures and its own allocator peak; {} on CPU."""
    if memory.device.type != "cuda":
        return {}
    return {**sampled, M.GPU_PEAK_MEMORY: memory.peak_mb}


def network_input(plan: TrialPlan, level: LevelData) -> tuple[int, int, list[int]]:
    """Spatial dims, input channels and the input size the network is built for (patch or image)."""
    first_image = level.train.volume(0)[0]
    spatial_dims = first_image.ndim - 1
    img_size = [plan.patch_size] * spatial_dims if plan.patch_size else list(first_image.shape[1:])
    return spatial_dims, int(first_image.shape[0]), [int(s) for s in img_size]


@contextlib.contextmanager
def out_of_memory_as_failure(epoch: int, device: torch.device) -> Iterator[None]:
    """Turn torch's CUDA OOM and Python's MemoryError into a named trial failure."""
    try:
        yield
    except (torch.OutOfMemoryError, MemoryError) as exc:
        detail = first_line(exc, empty="allocation failed")
        raise TrialOutOfMemoryError(
            f"out of memory on {device.type} at epoch {epoch} ({detail}); lower batch_size, patch_size or "
            "resources.gpu packing"
        ) from None


def run_plan(
    plan: TrialPlan, *, spec: StudySpec, data: StudyData, on_epoch: Callable[[dict[str, float]], None] | None = None,
    trained: Trained | None = None,
) -> PlanResult:
    """Train, calibrate and test one plan (clean, perturbed and, with `evaluation.shift`, on the
    test split at other levels); Tune-free so a plain loop (or a benchmark) can call it.
    `trained`: the plan's training done already (`study.training.reuse`): only calibrate and test."""
    if trained is None:
        trained = train_plan(plan, spec=spec, data=data, on_epoch=on_epoch)
    level = data[plan.data_key]
    clean_test: list[np.ndarray] = []

    def predict(split: Split) -> list[np.ndarray]:
        probs = trained.inputs.predict(trained.model, split, device=device_of(spec))
        if split is level.test:  # the clean test set: kept for the learning gate, not predicted twice
            clean_test[:] = probs
        return probs

    tested = evaluate_with_bounds(predict, level, spec)
    per_image = with_test_levels(tested.per_image, level, cell=plan.cell, shift=spec.evaluation.shift)
    clean = per_image[per_image["condition"] == M.CLEAN]
    corrupted = per_image[per_image["condition"] != M.CLEAN]  # perturbed and shifted: one metric each
    metrics = summarise_test(clean, best_val=trained.best_val)
    verdict = judge(
        spec.evaluation.learning,
        test_probs=clean_test,
        threshold=spec.evaluation.threshold,
        test_dice=metrics[M.TEST_DICE],
        val_curve=trained.val_curve,
        trivial_val_dice=blind_baseline(level.train, level.val),
        test_truths=[level.test.volume(i)[1] for i in range(len(level.test))],
    )
    metrics.update(condition_metrics(corrupted) if len(corrupted) else {})
    metrics.update(coverage_metrics(tested.coverage))
    metrics[M.PEAK_MEMORY] = trained.peak_memory_mb
    metrics.update(trained.gpu)
    patch_fg = trained.inputs.patch_foreground if isinstance(trained.inputs, Patches) else None
    if patch_fg:
        metrics.update(patch_statistics(patch_fg))
    return PlanResult(
        metrics, per_image, trained.model.state_dict(), patch_fg, tested.calibration, tested.coverage, verdict
    )


def patch_statistics(foreground: list[float]) -> dict[str, float]:
    """Quantiles and mean of the training patches' foreground shares (logged as metrics)."""
    values = np.asarray(foreground, dtype=float)
    stats = {f"{M.PATCH_FG_PREFIX}{round(q * 100):02d}": float(np.quantile(values, q)) for q in M.PATCH_FG_QUANTILES}
    stats[M.PATCH_FG_MEAN] = float(values.mean())
    return stats


class PeakMemory:
    """Peak memory of the trial: CUDA allocator peak on GPU, else the process's resident-set
    high-water mark (Linux ru_maxrss; a reused actor carries its earlier trials' peak)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_mb = 0.0
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

    def sample(self) -> None:
        if self.device.type == "cuda":
            now = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            now = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        self.peak_mb = max(self.peak_mb, now)


def prepared_device(spec: StudySpec) -> torch.device:
    """The trial's device, with the process set up for it: the spec's CPU threads, and cuDNN
    autotuning on CUDA. Training and restoring a kept training both start here."""
    process_state.set_torch_threads(spec.resources.cpu)
    device = device_of(spec)
    prepare_device(device)
    return device


def device_of(spec: StudySpec) -> torch.device:
    """The device the spec's trials run on: CUDA when it asks for a GPU share and one is here."""
    return torch.device("cuda" if spec.resources.gpu > 0 and torch.cuda.is_available() else "cpu")


def summarise_test(per_image: pd.DataFrame, *, best_val: float) -> dict[str, float]:
    """Final trial metrics: means over test images (every image counted, see EmptyPolicy).

    Texture disparity is only defined for 2D texture data; elsewhere it is left out, not NaN.
    """
    metrics = {m.test_key: float(per_image[m.name].mean()) for m in METRICS.values()}
    metrics |= {M.TEST_MISSED: float(per_image["missed"].sum()), M.BEST_VAL_DICE: best_val}
    if per_image["td"].notna().any():
        metrics[M.TEST_TD] = float(np.nanmean(per_image["td"]))
    return metrics
