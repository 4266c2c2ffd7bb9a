"""What every dataset hands to the trainable: three splits of arrays, built once per study."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator


@dataclass(frozen=True)
class Split:
    """One split of a dataset, channel-first arrays ready for a network.

    Attributes:
        images: float32, shape (N, C, *spatial), intensities roughly in [0, 1].
        masks: uint8 {0, 1}, shape (N, 1, *spatial).
        ids: one stable identifier per image; identical across cells so results pair by image.
        td: float64, shape (N,): texture disparity of each image (NaN where not defined).
        spacing: physical size of a pixel/voxel along each spatial axis (mm).
    """

    images: np.ndarray
    masks: np.ndarray
    ids: tuple[str, ...]
    td: np.ndarray
    spacing: tuple[float, ...]

    def __len__(self) -> int:
        return len(self.ids)


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
