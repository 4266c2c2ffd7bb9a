"""Datasets: one registry entry per dataset, each building `LevelData` from a config and factors.

Adding a dataset is one module with a pydantic config and a build function, plus one entry in
`DATASETS`. `factors` lists the study factors the dataset consumes (data is built once per
combination of their values) with a check that says what values are accepted; `shiftable` those
of them whose other levels render the same images (a train/test shift, `evaluation.shift`).

Example:
    >>> entry = get_dataset("synthetic2d")
    >>> entry.factors["alpha"](1.5)
    'must be a number in [0, 1)'
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from study.data.base import INTERFACE, DatasetConfig, LevelData, ShiftedTest, Split, SplitConfig
from study.data.msd import MSDConfig, build_msd, check_msd
from study.data.synthetic2d import Synthetic2DConfig, build_synthetic2d, check_alpha
from study.data.synthetic3d import Synthetic3DConfig, build_synthetic3d
from study.data.texture_disparity import texture_disparity
from study.errors import unknown_name


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset.

    Attributes:
        config: the `DatasetConfig` of the spec's `data:` section (a `dataset` literal field, a
            `seed`, `spatial_dims` and `image_size`).
        factors: each factor the dataset consumes -> check returning None if a value is OK,
            else a short text of what is accepted.
        build: ``build(config, **factor_values) -> LevelData``.
        check: optional ``check(config) -> None`` that validates input files without building
            (raises `SegstudyError`), for `segstudy validate` on datasets read from disk.
        intensity: the `study.data.intensity.INTENSITY` normalisation the build applied, so
            `segstudy predict` can apply it to a new image.
        shiftable: the factors (of `factors`) whose levels change how images look but not which
            images there are: image i at another level has the same id and mask (synthetic2d's
            alpha changes only the blend). Only these can be a spec's `evaluation.shift` key,
            testing a model on its test split rendered at other levels.
    """

    config: type[DatasetConfig]
    factors: Mapping[str, Callable[[Any], str | None]]
    build: Callable[..., LevelData]
    check: Callable[[Any], None] | None = None
    intensity: str = "as_is"
    shiftable: frozenset[str] = frozenset()


DATASETS: dict[str, DatasetEntry] = {
    "synthetic2d": DatasetEntry(
        config=Synthetic2DConfig,
        factors={"alpha": check_alpha},
        build=build_synthetic2d,
        shiftable=frozenset({"alpha"}),  # image i is the same at every alpha but for the blend
    ),
    # 3D data for the context-vs-FBR study: built once per study, no dataset factors.
    "synthetic3d": DatasetEntry(config=Synthetic3DConfig, factors={}, build=build_synthetic3d),
    "msd": DatasetEntry(config=MSDConfig, factors={}, build=build_msd, check=check_msd, intensity="percentile"),
}


for _name, _entry in DATASETS.items():  # the interface the spec checks and the driver read
    _missing = [a for a in INTERFACE if a not in _entry.config.model_fields and not hasattr(_entry.config, a)]
    assert issubclass(_entry.config, DatasetConfig) and not _missing, (_name, _missing)
    assert _entry.shiftable <= set(_entry.factors), (_name, sorted(_entry.shiftable - set(_entry.factors)))


def get_dataset(name: str, *, where: str = "data.dataset") -> DatasetEntry:
    """The registry entry for `name`; an unknown name raises a did-you-mean `SegstudyError`."""
    try:
        return DATASETS[name]
    except KeyError:
        raise unknown_name("dataset", name, DATASETS, where=where) from None


__all__ = [
    "DATASETS",
    "DatasetConfig",
    "DatasetEntry",
    "LevelData",
    "MSDConfig",
    "ShiftedTest",
    "Split",
    "SplitConfig",
    "Synthetic2DConfig",
    "Synthetic3DConfig",
    "build_msd",
    "build_synthetic2d",
    "build_synthetic3d",
    "check_msd",
    "get_dataset",
    "texture_disparity",
]
