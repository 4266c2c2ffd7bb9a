"""Model weights on disk: saved as a plain state dict, loaded with `weights_only=True`.

A checkpoint from a shared store is untrusted input: full unpickling would run whatever code
the file names. `weights_only=True` only rebuilds tensors and plain containers.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from study.errors import SegstudyError

WEIGHTS_FILE = "model.pt"


def save_weights(state_dict: dict[str, Any], path: Path) -> None:
    torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, path)


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """Load a state dict saved by `save_weights`, refusing anything but tensors and containers.

    Raises:
        SegstudyError: naming the file when it is missing, corrupt, or holds other objects.
    """
    if not path.is_file():
        raise SegstudyError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0][:200]
        raise SegstudyError(f"{path}: refused, not a plain weights file ({first})") from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise SegstudyError(f"{path}: cannot read checkpoint ({type(exc).__name__}: {str(exc)[:200]})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SegstudyError(f"{path}: not a state dict of tensors")
    return state


__all__ = ["WEIGHTS_FILE", "load_weights", "save_weights"]
