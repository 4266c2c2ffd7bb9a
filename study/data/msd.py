"""Medical Segmentation Decathlon (MSD) folders as a segstudy dataset (docs/ARCHITECTURE.md 4.2, real data).

Layout read (e.g. Task09_Spleen):

    root/dataset.json   {"labels": {"0": "background", "1": "spleen"},
                         "training": [{"image": "./imagesTr/x.nii.gz", "label": "./labelsTr/x.nii.gz"}]}
    root/imagesTr/*.nii.gz, root/labelsTr/*.nii.gz

Every case is checked (paths inside the root, readable NIfTI, finite image, label on the image's
grid, selected label present), reoriented to RAS and optionally resampled with MONAI, scaled to
[0, 1] by its own 0.5/99.5 percentiles, and split by case with a seeded permutation, so slices
of one patient never straddle train and test. `as_2d` turns each split's volumes into axial
slices (last axis after RAS) padded or cropped to `slice_size`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, PositiveFloat

from study.data.intensity import scale_percentiles
from study.data.base import DatasetConfig, LevelData, Split, SplitConfig, pack_volumes, split_sizes
from study.data.nifti_io import NiftiVolume, check_same_grid, ras_spacing, read_nifti, resolve_inside
from study.errors import SegstudyError, unknown_name
from study.paths import not_a_uri

_SPLIT_STREAM = 1
_SLICE_STREAM = 2
_SPACING_RTOL = 1e-3
_RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))  # explicit: MONAI warns about a changing default


class VolumeReading(DatasetConfig):
    """How volumes are read, for the MSD config and the folders one (study/data/folders.py): one
    voxel spacing (resampled with MONAI when `spacing` is set; without it every case must already
    share one, as metrics in mm need one per split), 2D slicing, the split and its seed."""

    dataset: str  # each config's Literal; declared here so it stays the first key
    spacing: tuple[PositiveFloat, PositiveFloat, PositiveFloat] | None = None
    as_2d: bool = False
    slice_size: int = Field(128, ge=16, le=2048, description="2D in-plane size after padding/cropping")
    empty_slices: float = Field(0.1, ge=0, le=1, description="share of slices without foreground kept in 2D")
    split: SplitConfig = SplitConfig()
    seed: int = Field(0, ge=0)
    max_cases: int | None = Field(None, ge=3, description="the first N cases only")

    @property
    def spatial_dims(self) -> int:
        return 2 if self.as_2d else 3

    @property
    def image_size(self) -> int | None:
        """Network input side for whole-slice 2D training; None in 3D (patches set the size)."""
        return self.slice_size if self.as_2d else None


class MSDConfig(VolumeReading):
    """The `data:` section of a spec for an MSD-layout folder.

    `root` is read as given (relative paths from the working directory).
    """

    dataset: Literal["msd"] = "msd"
    root: Path
    label: int | str = Field(1, description="foreground label value or name from dataset.json")


def check_msd(cfg: MSDConfig) -> None:
    """Validate dataset.json, the label and every listed file without building tensors.

    Raises:
        SegstudyError: one line naming the file for the first problem found (see `build_msd`).

    Example:
        >>> check_msd(MSDConfig(root=Path("Task09_Spleen"), label="spleen"))  # doctest: +SKIP
    """
    index, value = _index_and_label(cfg)
    reference: tuple[Path, tuple[float, ...]] | None = None
    channels: tuple[Path, int] | None = None
    for case in index.cases:
        image, _ = _read_case(case, value, index.labels[value], index.labels)
        reference = check_spacing(cfg, image, reference)
        channels = _check_channels(index, image, channels)


def build_msd(cfg: MSDConfig) -> LevelData:
    """Load, check and split an MSD folder (consumes no study factors).

    Returns:
        LevelData with float32 images (C, X, Y, Z) in [0, 1] and uint8 masks (1, X, Y, Z) of
        the selected label, stacked where all cases share a shape and per-case tuples
        otherwise; ids are the image file names without extension. With `as_2d`, stacked
        (N, C, S, S) slices with ids "case_z012". td is NaN; spacing is cfg.spacing or the
        shared native spacing (mm, RAS order).

    Raises:
        SegstudyError: naming the file, for a missing or invalid dataset.json, a path leaving
            the root, a missing or corrupt NIfTI, image/label shape or affine mismatch,
            non-finite image voxels, a case without the selected label, an unknown label,
            or differing native spacings when `spacing` is not set.

    Example:
        >>> level = build_msd(MSDConfig(root=Path("Task09_Spleen"), spacing=(1.5, 1.5, 2.0)))  # doctest: +SKIP
    """
    index, value = _index_and_label(cfg)
    name = index.labels[value]
    parts = _split_cases(cfg, index)
    reference: tuple[Path, tuple[float, ...]] | None = None
    channels: tuple[Path, int] | None = None
    splits = []
    for part in parts:
        images, masks, ids = [], [], []
        for position in part:
            case = index.cases[position]
            image_vol, label_vol = _read_case(case, value, name, index.labels)
            reference = check_spacing(cfg, image_vol, reference)
            channels = _check_channels(index, image_vol, channels)
            image, mask = prepare_volume(cfg, image_vol, label_vol, value, name)
            if cfg.as_2d:
                for z, (im, ma) in axial_slices(cfg, image, mask, position, label_vol.path):
                    images.append(im)
                    masks.append(ma)
                    ids.append(f"{case.case_id}_z{z:03d}")
            else:
                images.append(image)
                masks.append(mask)
                ids.append(case.case_id)
        assert reference is not None  # every split holds at least one case
        spacing = reference[1][:2] if cfg.as_2d else reference[1]
        splits.append(Split(pack_volumes(images), pack_volumes(masks), tuple(ids), np.full(len(ids), np.nan), spacing))
    return LevelData(train=splits[0], val=splits[1], calib=splits[2], test=splits[3])


def _index_and_label(cfg: MSDConfig) -> tuple[MSDIndex, int]:
    index = read_index(Path(cfg.root), max_cases=cfg.max_cases)
    return index, resolve_label(cfg.label, index, where="data.label")


@dataclass(frozen=True)
class MSDCase:
    """One training case of dataset.json: its id (image file name) and checked file paths."""

    case_id: str
    image: Path
    label: Path


@dataclass(frozen=True)
class MSDIndex:
    """dataset.json, checked: label value -> name, and the training cases in listing order."""

    path: Path
    labels: dict[int, str]
    cases: tuple[MSDCase, ...]
    channels: dict[str, str] | None = None  # 'modality' (MSD) or 'channel_names' (nnU-Net v2): index -> name


def read_index(root: Path, *, max_cases: int | None = None) -> MSDIndex:
    """Parse and check `root/dataset.json`: keys, label table, and every listed path.

    Raises:
        SegstudyError: naming dataset.json (or the listed file) if the root or the file is
            missing, the JSON is invalid, 'labels' or 'training' is missing or malformed, a
            case id repeats, or a listed path is absolute, leaves the root or does not exist.
    """
    not_a_uri(root, option="data.root", takes="a local folder")
    if not root.is_dir():
        raise SegstudyError(f"{root}: dataset root folder not found (data.root)")
    path = root / "dataset.json"
    if not path.is_file():
        raise SegstudyError(f"{path}: not found; an MSD dataset root holds dataset.json, imagesTr/ and labelsTr/")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SegstudyError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict) or "labels" not in raw or "training" not in raw:
        found = ", ".join(map(str, raw)) if isinstance(raw, dict) else type(raw).__name__
        raise SegstudyError(f"{path}: needs the keys 'labels' and 'training'; found: {found or 'nothing'}")
    labels = _parse_labels(raw["labels"], path)
    channels = _parse_channels(raw, path)
    training = raw["training"]
    if not isinstance(training, list) or not training:
        raise SegstudyError(f"{path}: 'training' must be a non-empty list of {{'image': ..., 'label': ...}}")
    cases: list[MSDCase] = []
    for i, entry in enumerate(training[:max_cases]):
        where = f"{path}: training[{i}]"
        if not (isinstance(entry, dict) and all(isinstance(entry.get(k), str) for k in ("image", "label"))):
            raise SegstudyError(f"{where}: needs 'image' and 'label' paths, got {entry!r}")
        image = resolve_inside(root, entry["image"], where=f"{where}.image")
        label = resolve_inside(root, entry["label"], where=f"{where}.label")
        case_id = image.name.removesuffix(".gz").removesuffix(".nii")
        if any(c.case_id == case_id for c in cases):
            raise SegstudyError(f"{where}: case '{case_id}' is listed twice")
        cases.append(MSDCase(case_id, image, label))
    return MSDIndex(path=path, labels=labels, cases=tuple(cases), channels=channels)


def _parse_channels(raw: dict[str, Any], path: Path) -> dict[str, str] | None:
    """The image channels dataset.json declares ({"0": "FLAIR", "1": "T1w"}), None if it names none."""
    key = next((k for k in ("modality", "channel_names") if k in raw), None)
    if key is None:
        return None
    table = raw[key]
    if not isinstance(table, dict) or not table or sorted(map(str, table)) != sorted(str(i) for i in range(len(table))):
        raise SegstudyError(f"{path}: '{key}' must map channel indices 0..N-1 to names, e.g. {{\"0\": \"CT\"}}; got {table!r}")
    return {str(k): str(v) for k, v in table.items()}


def _check_channels(index: MSDIndex, image: NiftiVolume, reference: tuple[Path, int] | None) -> tuple[Path, int]:
    """Every case has the channels dataset.json declares, and the same number as the first case:
    a network is built for one channel count, and a case with another fails every trial."""
    channels = 1 if image.data.ndim == 3 else int(image.data.shape[3])
    declared = index.channels
    if declared is not None and channels != len(declared):
        names = ", ".join(declared[str(i)] for i in range(len(declared)))
        raise SegstudyError(
            f"{image.path}: {channels} channel(s), but {index.path} declares {len(declared)} ({names}); "
            "every image needs the declared channels (4D images: channels last)"
        )
    if reference is not None and channels != reference[1]:
        raise SegstudyError(
            f"{image.path}: {channels} channel(s), but {reference[0].name} has {reference[1]}; every case of a "
            "dataset needs the same channels"
        )
    return reference or (image.path, channels)


def _parse_labels(raw: Any, path: Path) -> dict[int, str]:
    """{value: name} from MSD's {"1": "spleen"} (or nnU-Net v2's {"spleen": 1}) label table."""
    example = '{"0": "background", "1": "spleen"}'
    if not isinstance(raw, dict) or not raw:
        raise SegstudyError(f"{path}: 'labels' must map label values to names, e.g. {example}")
    if all(isinstance(v, int) and not isinstance(v, bool) for v in raw.values()):
        raw = {str(v): k for k, v in raw.items()}
    try:
        return {int(k): str(v) for k, v in raw.items()}
    except ValueError:
        raise SegstudyError(f"{path}: 'labels' must map label values to names, e.g. {example}") from None


def resolve_label(label: int | str, index: MSDIndex, *, where: str) -> int:
    """The foreground label value for a value or a name of dataset.json's label table.

    Raises:
        SegstudyError: for an unknown name (did-you-mean over the names) or a value that is
            background (0) or not in the table.
    """
    foreground = {value: name for value, name in index.labels.items() if value != 0}
    if isinstance(label, str):
        by_name = {name: value for value, name in foreground.items()}
        if label not in by_name:
            raise unknown_name("label", label, by_name, where=f"{where} (labels of {index.path})")
        return by_name[label]
    if label not in foreground:
        accepted = ", ".join(f"{v} ({n})" for v, n in sorted(foreground.items())) or "none listed"
        raise SegstudyError(f"{where}: label {label} is not a foreground label of {index.path}; accepted: {accepted}")
    return label


def _split_cases(cfg: MSDConfig, index: MSDIndex) -> list[np.ndarray]:
    """A seeded permutation of case positions cut into train/val/calib/test, each part in listing order."""
    n = len(index.cases)
    if n < 4:
        raise SegstudyError(f"{index.path}: lists {n} training case(s); need at least 4 for train/val/calib/test")
    order = np.random.default_rng(np.random.SeedSequence([cfg.seed, _SPLIT_STREAM])).permutation(n)
    n_train, n_val, n_calib, _ = split_sizes(n, cfg.split)
    return [np.sort(p) for p in np.split(order, np.cumsum([n_train, n_val, n_calib]))]


def _read_case(
    case: MSDCase, value: int, name: str, declared: Mapping[int, str] | None = None
) -> tuple[NiftiVolume, NiftiVolume]:
    """Read and check one image/label pair (grid, finiteness, only declared labels, selected label present)."""
    image = read_nifti(case.image, kind="image")
    label = read_nifti(case.label, kind="label")
    check_same_grid(image, label)
    if declared is not None:
        found = np.unique(label.data)
        unknown = [v for v in found.tolist() if not float(v).is_integer() or int(v) not in declared]
        if unknown:
            raise SegstudyError(
                f"{case.label}: label value(s) {', '.join(f'{v:g}' for v in unknown[:5])} not declared in dataset.json "
                f"'labels' (declared: {', '.join(str(k) for k in sorted(declared))})"
            )
    if not np.any(label.data == value):
        raise SegstudyError(f"{case.label}: no voxel has label {value} ('{name}'); every case needs the selected label")
    return image, label


def check_spacing(
    cfg: VolumeReading, image: NiftiVolume, reference: tuple[Path, tuple[float, ...]] | None
) -> tuple[Path, tuple[float, ...]]:
    """The (first file, spacing) every split reports; native spacings must agree without `spacing`."""
    if cfg.spacing is not None:
        return image.path, tuple(float(s) for s in cfg.spacing)
    spacing = ras_spacing(image.affine)
    if reference is None:
        return image.path, spacing
    compared = slice(0, 2) if cfg.as_2d else slice(0, 3)  # 2D slices only need in-plane spacing to agree
    if not np.allclose(spacing[compared], reference[1][compared], rtol=_SPACING_RTOL):
        raise SegstudyError(
            f"{image.path}: voxel spacing {_fmt(spacing)} differs from {_fmt(reference[1])} of "
            f"{reference[0].name}; set data.spacing (e.g. [1.5, 1.5, 2.0]) to resample all cases"
        )
    return reference


def prepare_volume(
    cfg: VolumeReading, image: NiftiVolume, label: NiftiVolume, value: int, name: str
) -> tuple[np.ndarray, np.ndarray]:
    """Channel-first float32 image in [0, 1] and uint8 mask, in RAS and at cfg.spacing if set."""
    # MONAI and torch load lazily: importing the dataset registry must stay fast for the CLI.
    import torch
    from monai.data import MetaTensor
    from monai.transforms import Orientation, Spacing

    affine = torch.as_tensor(image.affine)
    channels = image.data[None] if image.data.ndim == 3 else np.moveaxis(image.data, -1, 0)
    img = MetaTensor(torch.from_numpy(np.ascontiguousarray(channels)), affine=affine)
    mask = MetaTensor(torch.from_numpy((label.data == value)[None].astype(np.float32)), affine=affine)
    orient = Orientation(axcodes="RAS", labels=_RAS_LABELS)
    img, mask = orient(img), orient(mask)
    if cfg.spacing is not None:
        img = Spacing(pixdim=cfg.spacing, mode="bilinear", dtype=np.float32)(img)
        mask = Spacing(pixdim=cfg.spacing, mode="nearest", dtype=np.float32)(mask)
    out_mask = (np.asarray(mask.array) > 0.5).astype(np.uint8)
    if not out_mask.any():
        raise SegstudyError(
            f"{label.path}: label {value} ('{name}') vanishes when resampled to spacing {_fmt(cfg.spacing)}; "
            "use a finer data.spacing"
        )
    return scale_percentiles(np.asarray(img.array, dtype=np.float32)), out_mask


def axial_slices(
    cfg: VolumeReading, image: np.ndarray, mask: np.ndarray, position: int, label_path: Path
) -> list[tuple[int, tuple[np.ndarray, np.ndarray]]]:
    """Axial slices (index, (image, mask)): all with foreground, a seeded share of the empty ones."""
    from monai.transforms import ResizeWithPadOrCrop

    fit = ResizeWithPadOrCrop(spatial_size=(cfg.slice_size, cfg.slice_size, -1))
    image = np.asarray(fit(image), dtype=np.float32)
    mask = np.asarray(fit(mask), dtype=np.uint8)
    has_fg = mask.reshape(-1, mask.shape[-1]).any(axis=0)
    if not has_fg.any():
        raise SegstudyError(
            f"{label_path}: the label lies outside the central {cfg.slice_size}x{cfg.slice_size} crop; "
            "increase data.slice_size"
        )
    empty = np.flatnonzero(~has_fg)
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, _SLICE_STREAM, position]))
    kept_empty = rng.choice(empty, size=round(cfg.empty_slices * len(empty)), replace=False)
    keep = np.sort(np.concatenate([np.flatnonzero(has_fg), kept_empty]))
    return [(int(z), (image[..., z], mask[..., z])) for z in keep]


def _fmt(spacing: tuple[float, ...] | None) -> str:
    return "native" if spacing is None else "[" + ", ".join(f"{s:g}" for s in spacing) + "]"
