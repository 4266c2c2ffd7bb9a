"""Real labelled images in folders, one folder per level of a factor the spec names: a site, a
scanner, a protocol (docs/ARCHITECTURE.md 5, train/test shift).

    data:
      dataset: folders
      levels:
        site: {A: data/siteA, B: data/siteB}    # the factor and its levels; paths from the current folder
      as_2d: true                               # 2D networks: 2D images, or 3D volumes as axial slices
      slice_size: 64                            # 2D: every image padded or cropped to 64 x 64

Each level's folder is an MSD folder (dataset.json, imagesTr/, labelsTr/: `study/data/msd.py`) or
a folder of ``<id>_image`` / ``<id>_mask`` pairs, PNG or NIfTI (`study/data/image_pairs.py`). Each
level is split into train/val/calib/test on its own (seeded by ``seed``), so a model trained at
one level never saw an image of another. With ``factors: {site: [A]}`` the models train at A; with
``evaluation.shift: {site: [A, B]}`` every confirm model is also tested on B's test split. Those
are other images, so comparisons across levels are unpaired: image ids carry their level
(``A:case7``), and the analysis pairs arms within a level only. `validate` reads every file and
refuses levels that differ in channels, dimensionality (2D images against 3D volumes) or label set.
Intensities are scaled per image by their 0.5/99.5 percentiles, as for MSD.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from study.data.base import LevelData, Split, pack_volumes, split_sizes
from study.data.image_pairs import PairCase, find_pairs, read_nifti_pair, read_png_pair
from study.data.intensity import scale_percentiles
from study.data.msd import (
    MSDConfig, VolumeReading, axial_slices, build_msd, check_msd, check_spacing, prepare_volume, read_index,
)
from study.data.nifti_io import NiftiVolume, read_nifti
from study.errors import SegstudyError

_SPLIT_STREAM = 3
LEVEL_NAME = re.compile(r"[A-Za-z0-9_.+-]{1,64}")  # as a shift condition writes it (study/metrics_names.py)


class FoldersConfig(VolumeReading):
    """The `data:` section for levels that are folders of real images (see the module docstring);
    the reading settings are MSD's, applied to every level."""

    dataset: Literal["folders"] = "folders"
    levels: dict[str, dict[str, Path]] = Field(description="{factor: {level: folder}}, one factor")
    label: int | str | None = Field(
        None, description="foreground label: a value (or an MSD label name); None: the only one the masks hold"
    )

    @field_validator("levels", mode="before")
    @classmethod
    def _levels(cls, raw: Any) -> Any:
        example = "e.g. levels: {site: {A: data/siteA, B: data/siteB}}"
        if not isinstance(raw, dict) or len(raw) != 1:
            raise ValueError(f"name one factor and its levels, {example}")
        (factor, levels), = raw.items()
        if not isinstance(factor, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", factor):
            raise ValueError(f"factor {factor!r}: letters, digits and '_', starting with a letter")
        if not isinstance(levels, dict) or not levels:
            raise ValueError(f"{factor}: map each level to its folder, {example}")
        for level, folder in levels.items():
            if not isinstance(level, str) or not LEVEL_NAME.fullmatch(level) or _is_number(level):
                raise ValueError(
                    f"{factor}.{level}: a level name is letters, digits, '_', '.', '+' or '-', and not a number "
                    "(it would be read back as one)"
                )
            if not isinstance(folder, str | Path) or "://" in str(folder):
                raise ValueError(f"{factor}.{level}: {folder!r} is not a local folder; accepted: a path")
        return raw

    @property
    def factor(self) -> str:
        """The factor the levels are of, e.g. "site"."""
        return next(iter(self.levels))



def level_factor(cfg: FoldersConfig) -> dict[str, Callable[[Any], str | None]]:
    """The factor the config names, with the check of a level (a key of its `levels`)."""
    names = list(cfg.levels[cfg.factor])

    def check(value: Any) -> str | None:
        return None if value in names else f"is not a level of data.levels.{cfg.factor}; accepted: {', '.join(names)}"

    return {cfg.factor: check}


@dataclass(frozen=True)
class _Case:
    """One case as read: channel-first image and mask (3D: X, Y, Z; PNG: H, W), or NIfTI volumes."""

    case_id: str
    path: Path
    image: np.ndarray | NiftiVolume
    mask: np.ndarray | NiftiVolume


@dataclass(frozen=True)
class _Level:
    """A pairs level read and checked: its cases, and what every level must share."""

    cases: list[_Case]
    channels: int
    dims: str  # "2D" or "3D"
    labels: tuple[int, ...]  # foreground values found


def build_folders(cfg: FoldersConfig, **level: Any) -> LevelData:
    """Load and split the folder of one level (``build_folders(cfg, site="A")``); image ids are
    prefixed with the level (``A:case7``) so no id is shared across levels.

    Raises:
        SegstudyError: naming the file or key, as `check_folders`.
    """
    (factor, value), = level.items()
    folder, where = cfg.levels[factor][value], f"data.levels.{factor}.{value}"
    if _is_msd(folder):
        data = build_msd(_msd_config(cfg, folder, where))
    else:
        data = _build_pairs(cfg, _read_pairs(cfg, folder, where), where)
    return LevelData(*(_prefixed(split, f"{value}:") for _, split in data.named_splits()))


def check_folders(cfg: FoldersConfig) -> None:
    """Read every file of every level and compare the levels (for `segstudy validate`).

    Raises:
        SegstudyError: one line for the first problem: ``data.levels.<factor>.<level>: ...`` for a
            level whose channels, dimensionality or label set differs from the first level's, then
            a file (as the MSD or pairs reader says) or a label that does not select one structure.
    """
    levels = cfg.levels[cfg.factor]
    read = {value: _pairs_or_index(cfg, folder, f"data.levels.{cfg.factor}.{value}") for value, folder in levels.items()}
    first = next(iter(read))
    for value, (summary, _) in read.items():
        problem = _difference(summary, read[first][0])
        if problem:
            raise SegstudyError(
                f"data.levels.{cfg.factor}.{value} ({levels[value]}): {problem} level {first} ({levels[first]}); every "
                f"level of data.levels.{cfg.factor} needs the same channels, dimensionality and labels"
            )
    for value, (_, level) in read.items():
        where = f"data.levels.{cfg.factor}.{value}"
        if level is None:
            check_msd(_msd_config(cfg, levels[value], where))  # every case, as `segstudy validate` does for msd
        else:
            _value(cfg, level, where)


def _pairs_or_index(cfg: FoldersConfig, folder: Path, where: str) -> tuple[tuple, _Level | None]:
    """(channels, dimensionality, foreground values, label names) of a level, and its pairs as read
    (None for an MSD folder, whose cases `check_msd` reads)."""
    if _is_msd(folder):
        index = read_index(Path(folder), max_cases=cfg.max_cases)
        image = read_nifti(index.cases[0].image, kind="image")
        channels = 1 if image.data.ndim == 3 else int(image.data.shape[3])
        foreground = {v: n for v, n in index.labels.items() if v != 0}
        return (channels, "3D", tuple(sorted(foreground)), foreground), None
    level = _read_pairs(cfg, folder, where)
    return (level.channels, level.dims, level.labels, None), level


def _difference(a: tuple, b: tuple) -> str | None:
    (channels, dims, labels, names), (channels_b, dims_b, labels_b, names_b) = a, b
    if channels != channels_b:
        return f"{channels} image channel(s), but {channels_b} in"
    if dims != dims_b:
        return f"{dims} images, but {dims_b} in"
    if _label_set(labels) != _label_set(labels_b) or (names is not None and names_b is not None and names != names_b):
        return f"labels {_label_text(labels, names)}, but {_label_text(labels_b, names_b)} in"
    return None


def _label_set(values: tuple[int, ...]) -> tuple[int, ...]:
    """One foreground value is a binary mask however it is stored (1 or 255)."""
    return (1,) if len(values) == 1 else values


def _label_text(values: tuple[int, ...], names: dict[int, str] | None) -> str:
    return ", ".join(f"{v} ({names[v]})" if names and v in names else str(v) for v in values) or "none"


def _is_msd(folder: Path) -> bool:
    return (Path(folder) / "dataset.json").is_file()


def _msd_config(cfg: FoldersConfig, folder: Path, where: str) -> MSDConfig:
    label = cfg.label
    if label is None:
        index = read_index(Path(folder), max_cases=cfg.max_cases)
        foreground = {v: n for v, n in index.labels.items() if v != 0}
        if len(foreground) != 1:
            listed = ", ".join(f"{v} ({n})" for v, n in sorted(foreground.items()))
            raise SegstudyError(f"data.label: {index.path} declares several foreground labels ({listed}); set data.label")
        label = next(iter(foreground))
    reading = {name: getattr(cfg, name) for name in VolumeReading.model_fields if name != "dataset"}
    return MSDConfig(root=Path(folder), label=label, **reading)


def _read_pairs(cfg: FoldersConfig, folder: Path, where: str) -> _Level:
    """Every pair of a level, read and checked: one format, channels and dimensionality for all."""
    pairs = find_pairs(Path(folder), where=where, max_cases=cfg.max_cases)
    if len(pairs) < 4:
        raise SegstudyError(f"{where}: {folder} holds {len(pairs)} pair(s); need at least 4 for train/val/calib/test")
    cases, labels = [], set()
    shape: tuple[PairCase, int, str] | None = None
    for pair in pairs:
        case = _read_pair(pair)
        image, mask = case.image, case.mask
        data = image.data if isinstance(image, NiftiVolume) else image
        values = np.unique(mask.data if isinstance(mask, NiftiVolume) else mask)
        channels = (data.shape[3] if data.ndim == 4 else 1) if isinstance(image, NiftiVolume) else data.shape[0]
        dims = "2D" if pair.kind == "png" or data.shape[2] == 1 else "3D"
        if shape is not None and (channels, dims) != shape[1:]:
            raise SegstudyError(
                f"{pair.image}: {channels} channel(s), {dims}, but {shape[0].image.name} has {shape[1]}, {shape[2]}; "
                "every image of a level needs the same channels and dimensionality"
            )
        shape = shape or (pair, int(channels), dims)
        labels.update(int(v) for v in values if v != 0)
        cases.append(case)
    assert shape is not None
    if shape[2] == "2D" and not cfg.as_2d:
        raise SegstudyError(f"{where}: {folder} holds 2D images; set data.as_2d: true (and data.slice_size)")
    return _Level(cases=cases, channels=shape[1], dims=shape[2], labels=tuple(sorted(labels)))


def _read_pair(pair: PairCase) -> _Case:
    if pair.kind == "png":
        image, mask = read_png_pair(pair)
        return _Case(pair.case_id, pair.mask, image, mask)
    image_vol, label_vol = read_nifti_pair(pair)
    return _Case(pair.case_id, pair.mask, image_vol, label_vol)


def _value(cfg: FoldersConfig, level: _Level, where: str) -> int:
    """The foreground value: data.label, or the one value the masks hold; every mask must hold it."""
    if isinstance(cfg.label, str):
        raise SegstudyError(f"data.label: '{cfg.label}' is a name, but {where} has no label names (pairs); give a value")
    if cfg.label is None and len(level.labels) != 1:
        found = ", ".join(map(str, level.labels)) or "none"
        raise SegstudyError(f"data.label: the masks of {where} hold the foreground values {found}; set data.label to one")
    value = level.labels[0] if cfg.label is None else cfg.label
    for case in level.cases:
        mask = case.mask.data if isinstance(case.mask, NiftiVolume) else case.mask
        if not np.any(mask == value):
            raise SegstudyError(f"{case.path}: no pixel has label {value}; every image needs the foreground")
    return value


def _build_pairs(cfg: FoldersConfig, level: _Level, where: str) -> LevelData:
    from monai.transforms import ResizeWithPadOrCrop

    value = _value(cfg, level, where)
    fit = ResizeWithPadOrCrop(spatial_size=(cfg.slice_size, cfg.slice_size))
    reference: tuple[Path, tuple[float, ...]] | None = None
    samples: list[list[tuple[str, np.ndarray, np.ndarray]]] = []
    for position, case in enumerate(level.cases):
        if isinstance(case.image, NiftiVolume) and isinstance(case.mask, NiftiVolume):
            reference = check_spacing(cfg, case.image, reference)
            image, mask = prepare_volume(cfg, case.image, case.mask, value, str(value))
            if level.dims == "2D":
                samples.append([(case.case_id, image[..., 0], mask[..., 0])])
            elif cfg.as_2d:
                samples.append([(f"{case.case_id}_z{z:03d}", im, ma)
                                for z, (im, ma) in axial_slices(cfg, image, mask, position, case.path)])
            else:
                samples.append([(case.case_id, image, mask)])
        else:
            image = scale_percentiles(np.asarray(case.image, dtype=np.float32))
            samples.append([(case.case_id, image, (np.asarray(case.mask) == value)[None].astype(np.uint8))])
    spacing = (1.0, 1.0) if reference is None else reference[1]
    spacing = spacing[:2] if cfg.as_2d else spacing
    splits = []
    for part in _split(cfg, len(samples)):
        chosen = [sample for i in part for sample in samples[i]]
        if cfg.as_2d:
            chosen = [(i, np.asarray(fit(im), np.float32), np.asarray(fit(ma), np.uint8)) for i, im, ma in chosen]
        ids = tuple(i for i, _, _ in chosen)
        images, masks = pack_volumes([im for _, im, _ in chosen]), pack_volumes([ma for _, _, ma in chosen])
        splits.append(Split(images, masks, ids, np.full(len(ids), np.nan), tuple(spacing)))
    return LevelData(*splits)


def _split(cfg: FoldersConfig, n: int) -> list[np.ndarray]:
    """A seeded permutation of case positions cut into train/val/calib/test, each part in order."""
    order = np.random.default_rng(np.random.SeedSequence([cfg.seed, _SPLIT_STREAM])).permutation(n)
    n_train, n_val, n_calib, _ = split_sizes(n, cfg.split)
    return [np.sort(p) for p in np.split(order, np.cumsum([n_train, n_val, n_calib]))]


def _prefixed(split: Split, prefix: str) -> Split:
    return Split(split.images, split.masks, tuple(prefix + i for i in split.ids), split.td, split.spacing)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


__all__ = ["FoldersConfig", "build_folders", "check_folders", "level_factor"]
