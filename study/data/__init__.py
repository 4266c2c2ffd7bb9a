"""Datasets: one registry entry per dataset, each building `LevelData` from a config and factors.

Adding a dataset is one module with a pydantic config and a build function, plus one entry in
`DATASETS`. `factors` lists the study factors the dataset consumes (data is built once per
combination of their values) with a check that says what values are accepted; `shiftable` those
of them a model can be tested at another level of (a train/test shift, `evaluation.shift`). A
dataset whose config names its own factor (`folders`: ``levels: {site: {A: ..., B: ...}}``) gives
`config_factors`; use `factors_for` and `shiftable_for` to read an entry with its config.

Example:
    >>> entry = get_dataset("synthetic2d")
    >>> entry.factors["alpha"](1.5)
    'must be a number in [0, 1)'
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from study.data.base import INTERFACE, DatasetConfig, LevelData, ShiftedTest, Split, SplitConfig
from study.data.folders import FoldersConfig, build_folders, check_folders, level_factor
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
            alpha changes only the blend). Only these (and `config_factors`) can be a spec's
            `evaluation.shift` key, testing a model on its test split rendered at other levels.
        config_factors: ``config -> {factor: check}`` for a factor the config itself names (the
            folders dataset's ``levels: {site: ...}``): required in the spec's factors, and
            shiftable, each level testing on its own test split (other images: unpaired).
    """

    config: type[DatasetConfig]
    factors: Mapping[str, Callable[[Any], str | None]]
    build: Callable[..., LevelData]
    check: Callable[[Any], None] | None = None
    intensity: str = "as_is"
    shiftable: frozenset[str] = frozenset()
    config_factors: Callable[[Any], Mapping[str, Callable[[Any], str | None]]] | None = None

    def factors_for(self, config: Any) -> dict[str, Callable[[Any], str | None]]:
        """The factors a spec with this `data:` config may name: the entry's and the config's own."""
        return {**self.factors, **(self.config_factors(config) if self.config_factors else {})}

    def required_for(self, config: Any) -> list[str]:
        """The factors a spec must name: the build function's keyword-only arguments without a
        default, and the config's own factor."""
        needed = [
            name for name, p in inspect.signature(self.build).parameters.items()
            if p.kind is p.KEYWORD_ONLY and p.default is p.empty
        ]
        return needed + list(self.config_factors(config) if self.config_factors else {})

    def shiftable_for(self, config: Any) -> frozenset[str]:
        """The factors `evaluation.shift` may name with this config."""
        return self.shiftable | frozenset(self.config_factors(config) if self.config_factors else ())


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
    # Real images, one folder per level of a factor the spec names (site, scanner): built per level.
    "folders": DatasetEntry(
        config=FoldersConfig, factors={}, build=build_folders, check=check_folders, intensity="percentile",
        config_factors=level_factor,
    ),
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
    "FoldersConfig",
    "LevelData",
    "MSDConfig",
    "ShiftedTest",
    "Split",
    "SplitConfig",
    "Synthetic2DConfig",
    "Synthetic3DConfig",
    "build_folders",
    "build_msd",
    "build_synthetic2d",
    "build_synthetic3d",
    "check_msd",
    "get_dataset",
    "texture_disparity",
]
