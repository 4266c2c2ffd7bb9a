"""One epoch of training and batched inference on in-memory arrays."""

from __future__ import annotations

import numpy as np
import torch
from monai.losses import DiceCELoss, DiceLoss
from torch import nn

from study.spec import Hyperparameters, Training


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


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    images: np.ndarray,
    masks: np.ndarray,
    *,
    batch_size: int,
    rng: np.random.Generator,
    device: torch.device,
) -> float:
    """Shuffle with `rng`, step through every batch once, return the mean loss."""
    model.train()
    order = rng.permutation(len(images))
    total, seen = 0.0, 0
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        x = torch.from_numpy(images[idx]).to(device)
        y = torch.from_numpy(masks[idx]).float().to(device)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(idx)
        seen += len(idx)
    return total / max(seen, 1)


@torch.no_grad()
def predict_probabilities(
    model: nn.Module, images: np.ndarray, *, batch_size: int, device: torch.device
) -> np.ndarray:
    """Foreground probabilities, same shape as `images` with one channel."""
    model.eval()
    out = [
        # torch.tensor copies: arrays from the Ray object store are read-only.
        torch.sigmoid(model(torch.tensor(images[i : i + batch_size], device=device))).cpu().numpy()
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(out, axis=0)
