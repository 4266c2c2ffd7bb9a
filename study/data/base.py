"""What every dataset hands to the trainable: four splits of arrays, built once per study."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field, model_validator

from study.strict import StrictModel


class DatasetConfig(StrictModel):
    """The interface every dataset config (the spec's `data:` section) implements, so the spec
    checks and the driver read it typed instead of probing with getattr.

    Each config declares, as fields or properties:
        dataset: its registry name (a Literal field, the discriminator of `data:`);
        seed: the data seed (every random choice in building the data derives from it);
        spatial_dims: 2 or 3, the dimensionality of the network input;
        image_size: the side of whole-image network inputs, or None where patches set the size.

    They are declared for type checkers only, not as fields here: a field here would come first in
    every config's key list (and in "accepted keys here" messages), and a property here would be
    shadowed by a config's field. `study/data/__init__.py` checks every registered config has them.
    """

    if TYPE_CHECKING:
        dataset: str
        seed: int
        spatial_dims: int
        image_size: int | None


INTERFACE = ("dataset", "seed", "spatial_dims", "image_size")  # what DatasetConfig declares


@dataclass(frozen=True)
class Split:
    """One split of a dataset, channel-first arrays ready for a network.

    Volumes of one shape are stacked into one array; volumes whose shapes differ (real 3D data)
    are kept as a tuple of per-volume arrays. `volume(i)` reads either form.

    Attributes:
        images: float32, shape (N, C, *spatial), intensities roughly in [0, 1]; or a tuple of N
            arrays (C, *spatial) when spatial shapes differ.
        masks: uint8 {0, 1}, shape (N, 1, *spatial); or a tuple of N arrays (1, *spatial).
        ids: one stable identifier per image; identical across cells so results pair by image.
        td: float64, shape (N,): texture disparity of each image (NaN where not defined, e.g. 3D).
        spacing: physical size of a pixel/voxel along each spatial axis (mm).
    """

    images: np.ndarray | tuple[np.ndarray, ...]
    masks: np.ndarray | tuple[np.ndarray, ...]
    ids: tuple[str, ...]
    td: np.ndarray
    spacing: tuple[float, ...]

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def stacked(self) -> bool:
        """True when every image has the same shape and `images`/`masks` are single arrays."""
        return isinstance(self.images, np.ndarray)

    def volume(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Image (C, *spatial) and mask (1, *spatial) of sample `i`, stacked or not.

        Example:
            >>> image, mask = split.volume(0)  # doctest: +SKIP
        """
        return self.images[i], self.masks[i]

    @cached_property
    def _voxel_counts(self) -> tuple[np.ndarray, np.ndarray]:
        # Counted once and cached: the split is immutable and masks can be large 3D volumes.
        fg = np.array([np.count_nonzero(m) for m in self.masks], dtype=np.float64)
        total = np.array([m.size for m in self.masks], dtype=np.float64)
        return fg, total

    @property
    def fbr(self) -> np.ndarray:
        """float64 (N,): foreground voxels / background voxels of each mask (inf if no background).

        The per-volume foreground-to-background ratio the context-vs-FBR study bins results by.
        """
        fg, total = self._voxel_counts
        bg = total - fg
        return np.where(bg > 0, fg / np.maximum(bg, 1.0), np.inf)

    @property
    def foreground_fraction(self) -> np.ndarray:
        """float64 (N,): share of foreground voxels in each mask, for stacked and tuple masks."""
        fg, total = self._voxel_counts
        return fg / total


SPLIT_NAMES = ("train", "val", "calib", "test")


@dataclass(frozen=True)
class ShiftedTest:
    """The test split rendered at another level of one dataset factor (train at one level, test at
    another): the same image ids and masks, only what the factor changes differs (for synthetic2d,
    the blend), so every arm trained at one level meets the very same shifted pixels.

    Attributes:
        factor: the dataset factor changed, e.g. "alpha".
        level: the level the images were rendered at.
        split: the test split at that level.
    """

    factor: str
    level: Any
    split: Split


@dataclass(frozen=True)
class LevelData:
    """The splits for one combination of the dataset's own factors (e.g. alpha).

    `calib` is never trained or validated on: conformal bounds are calibrated on it and their
    coverage measured on `test`, so both must come from the same distribution. `shifted` holds the
    test split at the other levels a spec's `evaluation.shift` asks for (empty otherwise); they are
    tested on, never trained, validated or calibrated on.
    """

    train: Split
    val: Split
    calib: Split
    test: Split
    shifted: tuple[ShiftedTest, ...] = field(default=())

    def named_splits(self) -> list[tuple[str, Split]]:
        """(name, split) in SPLIT_NAMES order."""
        return [(name, getattr(self, name)) for name in SPLIT_NAMES]


class SplitConfig(StrictModel):
    """Fractions of a dataset's images that go to train, validation, calibration and test (sum to 1)."""

    train: float = Field(0.6, gt=0, lt=1)
    val: float = Field(0.1, gt=0, lt=1)
    calib: float = Field(0.1, gt=0, lt=1, description="conformal calibration; never trained on")
    test: float = Field(0.2, gt=0, lt=1)

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitConfig:
        total = self.train + self.val + self.calib + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(
                f"split fractions train + val + calib + test must sum to 1, got "
                f"{self.train} + {self.val} + {self.calib} + {self.test} = {total:.6g}"
            )
        return self


def split_sizes(n: int, split: SplitConfig) -> tuple[int, int, int, int]:
    """Image counts (train, val, calib, test) for `n` images: rounded fractions, at least one each.

    Example:
        >>> split_sizes(100, SplitConfig())
        (60, 10, 10, 20)
    """
    if n < 4:
        raise ValueError(f"need at least 4 images for four splits, got {n}")
    held = {"val": max(1, round(split.val * n)), "calib": max(1, round(split.calib * n)), "test": max(1, round(split.test * n))}
    while n - sum(held.values()) < 1:  # tiny datasets: take from the largest held-out split
        largest = max(held, key=lambda k: (held[k], k == "test"))
        held[largest] -= 1
    return n - sum(held.values()), held["val"], held["calib"], held["test"]


def pack_volumes(arrays: list[np.ndarray]) -> np.ndarray | tuple[np.ndarray, ...]:
    """One stacked array (N, C, *spatial) if every array has the same shape, else a tuple of them.

    The form `Split.images` and `Split.masks` take: stacked where possible (fast batching),
    per-volume where real data differ in size.

    Example:
        >>> pack_volumes([np.zeros((1, 4, 4, 4)), np.zeros((1, 4, 4, 4))]).shape
        (2, 1, 4, 4, 4)
    """
    if len({a.shape for a in arrays}) == 1:
        return np.stack(arrays)
    return tuple(arrays)
