"""One epoch of training over whatever batches an input strategy yields."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from monai.losses import DiceCELoss, DiceLoss
from torch import nn

from study.spec import Hyperparameters, Training
from study.training.device.accelerator import autocast


def build_loss(training: Training) -> nn.Module:
    """Binary segmentation loss on one sigmoid output channel."""
    if training.loss == "dice_ce":
        return DiceCELoss(sigmoid=True)
    return DiceLoss(sigmoid=True)


def build_optimizer(model: nn.Module, hp: Hyperparameters) -> torch.optim.Optimizer:
    params = model.parameters()
    if hp.optimizer == "sgd":
        return torch.optim.SGD(params, lr=hp.lr, momentum=0.9, weight_decay=hp.weight_decay)
    if hp.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
    return torch.optim.Adam(params, lr=hp.lr, weight_decay=hp.weight_decay)


def build_schedule(
    optimizer: torch.optim.Optimizer, training: Training, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The learning rate per optimiser step: the warm-up, then the schedule; None keeps the rate.

    Stepped after every optimiser step, so a warm-up of a few epochs is a ramp, not a staircase.
    """
    lr = torch.optim.lr_scheduler
    warm = training.warmup_epochs * steps_per_epoch
    after = None
    if training.schedule == "cosine":
        after = lr.CosineAnnealingLR(optimizer, T_max=training.epochs * steps_per_epoch - warm)
    if not warm:
        return after
    # LinearLR holds the full rate once the ramp is over, so a constant schedule needs nothing after it.
    ramp = lr.LinearLR(optimizer, start_factor=0.1, end_factor=1.0, total_iters=warm)
    return ramp if after is None else lr.SequentialLR(optimizer, [ramp, after], milestones=[warm])


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    batches: Iterable[tuple[Any, Any]],
    *,
    device: torch.device,
    amp: torch.dtype | None = None,
    schedule: torch.optim.lr_scheduler.LRScheduler | None = None,
    grad_clip: float | None = None,
) -> float:
    """Step through every batch once; return the mean loss per sample.

    Batches are numpy arrays copied to `device` per step, or tensors already there (a split kept
    on the GPU, study.training.device.accelerator). `amp`: autocast dtype of the forward pass (None: fp32,
    the CPU path); the loss is computed in fp32 either way. `schedule` steps after every optimiser
    step (build_schedule); `grad_clip` bounds the gradients' global norm before it.
    """
    model.train()
    total, seen = 0.0, 0
    for images, masks in batches:
        x = images if isinstance(images, torch.Tensor) else torch.tensor(images, device=device)
        y = masks if isinstance(masks, torch.Tensor) else torch.tensor(masks, device=device, dtype=torch.float32)
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, amp):
            logits = model(x)
        loss = loss_fn(logits.float(), y)  # .float(): a no-op in fp32, the loss in fp32 under autocast
        loss.backward()
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        if schedule is not None:
            schedule.step()
        total += float(loss.detach()) * len(x)
        seen += len(x)
    return total / max(seen, 1)
