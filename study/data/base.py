"""What every dataset hands to the trainable: three splits of arrays, built once per study."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator


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


@dataclass(frozen=True)
class LevelData:
    """The train/val/test splits for one combination of the dataset's own factors (e.g. alpha)."""

    train: Split
    val: Split
    test: Split


class SplitConfig(BaseModel):
    """Fractions of a dataset's images that go to train, validation and test (sum to 1)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    train: float = Field(0.7, gt=0, lt=1)
    val: float = Field(0.1, gt=0, lt=1)
    test: float = Field(0.2, gt=0, lt=1)

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitConfig:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(
                f"split fractions train + val + test must sum to 1, got "
                f"{self.train} + {self.val} + {self.test} = {total:.6g}"
            )
        return self


def split_sizes(n: int, split: SplitConfig) -> tuple[int, int, int]:
    """Image counts (train, val, test) for `n` images: rounded fractions, at least one per split.

    Example:
        >>> split_sizes(100, SplitConfig())
        (70, 10, 20)
    """
    if n < 3:
        raise ValueError(f"need at least 3 images for three splits, got {n}")
    val = max(1, round(split.val * n))
    test = max(1, round(split.test * n))
    while n - val - test < 1:  # tiny datasets: take from the larger held-out split
        if test >= val:
            test -= 1
        else:
            val -= 1
    return n - val - test, val, test


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
