"""The one base every perturbation shares, and the seed each (image, perturbation, severity) gets.

A perturbation maps a severity 1..5 to one value of one physical parameter (`levels`, in the unit
named by `parameter`); severity 0 is the identity (ROOD-MRI / ImageNet-C convention, docs/ARCHITECTURE.md 5).
`Perturbation.apply` validates the inputs, handles severity 0 and dtype, and calls the subclass's
`_perturb` with the parameter value. Randomness comes only from the `seed` argument, so every
architecture evaluated on an image sees the same pixels when the caller derives the seed with
`condition_seed`.
"""

from __future__ import annotations

import hashlib
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from study.errors import SegstudyError

N_SEVERITIES = 5
Result = tuple[np.ndarray, dict[str, Any]]  # perturbed image, realised parameters
SEED_LIMIT = 2**32  # numpy's RandomState (used by MONAI transforms) accepts seeds below 2**32


def condition_seed(base_seed: int, image_id: str, name: str, severity: int) -> int:
    """The seed for one (image, perturbation, severity), identical in every process and run.

    Derived with SHA-256 rather than Python's `hash()`, which is salted per process, so Ray
    workers evaluating different architectures draw the same noise for the same image.

    Returns:
        An int in [0, 2**32), accepted by numpy Generators and MONAI's `set_random_state`.

    Example:
        >>> condition_seed(0, "case_001", "gaussian_noise", 3)
        1382545110
    """
    key = f"{int(base_seed)}|{image_id}|{name}|{int(severity)}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "big")


class Perturbation(ABC):
    """A controlled image corruption with five severities of one physical parameter.

    Subclasses set the class attributes and implement `_perturb`; `apply` is the public entry.

    Attributes:
        name: registry key.
        parameter: the physical parameter the severities map to, with its unit.
        default_levels: parameter values for severities 1..5 when none are given.
        limits: inclusive range every level must lie in.
        stochastic: True if the output depends on the seed.
        needs_mask: True if `apply` requires the foreground mask.
        levels: parameter values for severities 1..5 of this instance.
    """

    name: ClassVar[str]
    parameter: ClassVar[str]
    default_levels: ClassVar[tuple[float, ...]]
    limits: ClassVar[tuple[float, float]] = (-math.inf, math.inf)
    stochastic: ClassVar[bool]
    needs_mask: ClassVar[bool] = False

    def __init__(self, *, levels: Sequence[float] | None = None) -> None:
        self.levels: tuple[float, ...] = self._check_levels(self.default_levels if levels is None else levels)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(levels={self.levels})"

    def apply(self, image: np.ndarray, *, severity: int, seed: int, mask: np.ndarray | None = None) -> Result:
        """Corrupt `image` at `severity`, drawing any randomness from `seed` alone.

        Args:
            image: channel-first float array (C, *spatial), 2D or 3D, intensities about [0, 1].
                It is never modified.
            severity: 0 (identity) to 5.
            seed: int in [0, 2**32), e.g. from `condition_seed`; the same seed gives identical output.
            mask: foreground mask, (*spatial) or (1, *spatial), non-zero = foreground; required
                when `needs_mask`, ignored otherwise.

        Returns:
            The perturbed image (same shape and dtype; at severity 0 the input array itself) and
            the realised parameters as a JSON-serialisable dict ({} at severity 0).

        Raises:
            SegstudyError: on a bad severity, seed, image or mask, or a missing mask.

        Example:
            >>> from study.perturbations import get_perturbation
            >>> img = np.full((1, 8, 8), 0.5, np.float32)
            >>> out, params = get_perturbation("gaussian_noise").apply(img, severity=2, seed=7)
            >>> params, out.dtype
            ({'std': 0.05}, dtype('float32'))
        """
        self._check_image(image)
        self._check_severity(severity)
        self._check_seed(seed)
        fg = self._check_mask(mask, image) if self.needs_mask else None
        if severity == 0:
            return image, {}
        value = self.levels[severity - 1]
        out, params = self._perturb(image.astype(np.float32), value=value, seed=int(seed), mask=fg)
        out = np.asarray(out, dtype=image.dtype)
        if out.shape != image.shape:  # a bug in a subclass, not a user error
            raise AssertionError(f"{self.name} changed the shape {image.shape} -> {out.shape}")
        return out, _jsonable(params)

    @abstractmethod
    def _perturb(self, image: np.ndarray, *, value: float, seed: int, mask: np.ndarray | None) -> Result:
        """Return the corrupted copy of float32 `image` at parameter `value`, and what was drawn.

        `mask` is a bool array of the spatial shape when `needs_mask`, else None. Must not modify
        `image` in place.
        """

    # --- validation -------------------------------------------------------------------------

    def _check_levels(self, levels: Sequence[float]) -> tuple[float, ...]:
        lo, hi = self.limits
        try:
            values = tuple(float(v) for v in levels)
        except (TypeError, ValueError):
            values = ()  # reported below like any other bad list
        diffs = np.diff(values)
        monotone = bool(np.all(diffs > 0) or np.all(diffs < 0))
        if len(values) != N_SEVERITIES or not monotone or not all(lo <= v <= hi for v in values):
            raise SegstudyError(
                f"perturbation '{self.name}': levels={levels!r} must be {N_SEVERITIES} strictly "
                f"increasing or decreasing values of {self.parameter} in [{lo}, {hi}]"
            )
        return values

    def _check_severity(self, severity: int) -> None:
        if not _is_int(severity) or not 0 <= severity <= N_SEVERITIES:
            raise SegstudyError(
                f"perturbation '{self.name}': severity={severity!r} is invalid; accepted: an int 0..{N_SEVERITIES}"
            )

    def _check_seed(self, seed: int) -> None:
        if not _is_int(seed) or not 0 <= seed < SEED_LIMIT:
            raise SegstudyError(
                f"perturbation '{self.name}': seed={seed!r} is invalid; accepted: an int in [0, 2**32) "
                "(see condition_seed)"
            )

    def _check_image(self, image: np.ndarray) -> None:
        if not isinstance(image, np.ndarray) or image.ndim not in (3, 4) or not np.issubdtype(image.dtype, np.floating):
            shape = getattr(image, "shape", None)
            raise SegstudyError(
                f"perturbation '{self.name}': image of type {type(image).__name__}, shape {shape} is invalid; "
                "accepted: a float numpy array (C, H, W) or (C, H, W, D)"
            )

    def _check_mask(self, mask: np.ndarray | None, image: np.ndarray) -> np.ndarray:
        spatial = image.shape[1:]
        if mask is None:
            raise SegstudyError(
                f"perturbation '{self.name}' needs the foreground mask; "
                f"pass mask= with shape {spatial} or (1, *{spatial})"
            )
        mask = np.asarray(mask)
        if mask.ndim == len(spatial) + 1 and mask.shape[0] == 1:
            mask = mask[0]
        if mask.shape != spatial:
            raise SegstudyError(
                f"perturbation '{self.name}': mask shape {mask.shape} does not match the image's spatial "
                f"shape {spatial}; accepted: {spatial} or (1, *{spatial})"
            )
        return mask != 0


# --- helpers shared by the implementations ---------------------------------------------------


def run_monai(transform: Any, image: np.ndarray, *, seed: int | None = None) -> np.ndarray:
    """Run a MONAI array transform on a copy of `image` and return float32 numpy.

    A random transform gets its own RandomState from `seed` (never MONAI's class-level one), so
    concurrent calls cannot disturb each other. The copy guards the caller's array against
    transforms that work in place.
    """
    if seed is not None:
        transform.set_random_state(seed=seed)
    out = transform(torch.from_numpy(image.copy()))
    if isinstance(out, torch.Tensor):
        out = out.detach().cpu().numpy()
    return np.asarray(out, dtype=np.float32)


def run_torchio(transform: Any, image: np.ndarray, *, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Run a TorchIO transform on a copy of `image`; return float32 numpy and what it drew.

    TorchIO works on 4D volumes (C, W, H, D): a 2D image is one voxel deep, which TorchIO's
    transforms recognise (rotation and ghosting stay in plane). It draws from torch's global RNG,
    so the draw is seeded with `seed` inside `torch.random.fork_rng`: the caller's RNG state (a
    trial's) is left as it was. The realised parameters are read from the subject's history.
    """
    import torchio as tio

    tensor = torch.from_numpy(image.astype(np.float32, copy=True))
    flat = tensor.ndim == 3
    if flat:
        tensor = tensor[..., None]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        subject = transform(tio.Subject(image=tio.ScalarImage(tensor=tensor)))
    out = subject["image"].data
    out = out[..., 0] if flat else out
    realised: dict[str, Any] = {}
    for applied in subject.get_applied_transforms():
        for name in getattr(applied, "args_names", ()):
            value = getattr(applied, name, None)
            realised[name] = value.get("image") if isinstance(value, dict) else value
    return np.asarray(out.detach().cpu().numpy(), dtype=np.float32), realised


def _is_int(value: object) -> bool:
    # bool is an int subclass, but severity=True is a mistake, not severity 1.
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _jsonable(value: Any) -> Any:
    """Turn numpy scalars/arrays and tuples into plain Python so the params go into JSON/MLflow."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, torch.Tensor):
        return _jsonable(value.tolist())
    return value
