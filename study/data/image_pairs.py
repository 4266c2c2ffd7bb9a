"""Folders of ``<id>_image`` / ``<id>_mask`` pairs (PNG or NIfTI), the layout `segstudy data synth`
writes and `segstudy recommend` reads, as cases a dataset can split and load.

A folder (searched with its sub-folders) holds one pair per case: ``case7_image.png`` beside
``case7_mask.png``, or ``.nii.gz`` / ``.nii``, one format per folder. Every file is checked as it is
read, each problem one line naming the file: a mask without an image or the other way round, an
id twice, a corrupt or non-finite image, a mask that is not on the image's grid or holds no
foreground. PNG images are 2D, grey (one channel) or colour (three; alpha dropped); NIfTI images
are 3D, 2D when stored one slice deep (H, W) or (H, W, 1), with channels as a 4th axis.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from study.data.nifti_io import NiftiVolume, check_claimed_size, check_finite, check_same_grid, open_nifti, read_voxels
from study.errors import SegstudyError, first_line

PAIR = re.compile(r"^(?P<id>.+)_(?P<role>image|mask)(?P<suffix>\.png|\.nii\.gz|\.nii)$")
FORMATS = {".png": "png", ".nii.gz": "nifti", ".nii": "nifti"}


@dataclass(frozen=True)
class PairCase:
    """One case of a pairs folder: its id and its two files."""

    case_id: str
    image: Path
    mask: Path

    @property
    def kind(self) -> str:
        """'png' or 'nifti'."""
        return FORMATS[PAIR.match(self.image.name)["suffix"]]  # type: ignore[index]


def find_pairs(folder: Path, *, where: str, max_cases: int | None = None) -> list[PairCase]:
    """Every image/mask pair under `folder`, sorted by id (the first `max_cases` only, if set).

    Raises:
        SegstudyError: naming `where` or the file: not a folder, no pair, a file of one role without
            the other, an id found twice, or PNG and NIfTI pairs mixed.
    """
    if not folder.is_dir():
        raise SegstudyError(f"{where}: folder {folder} not found")
    files: dict[tuple[str, str], Path] = {}
    for path in sorted(folder.rglob("*")):
        match = PAIR.match(path.name)
        if match is None or not path.is_file():
            continue
        key = (match["id"], match["role"])
        if key in files:
            raise SegstudyError(f"{path}: case '{match['id']}' is also {files[key]}; every id once per folder")
        files[key] = path
    ids = sorted({case_id for case_id, _ in files})
    if not ids:
        raise SegstudyError(
            f"{where}: no <id>_image / <id>_mask pair (.png, .nii.gz or .nii) under {folder}, and no dataset.json "
            "(an MSD folder)"
        )
    cases = []
    for case_id in ids:
        image, mask = files.get((case_id, "image")), files.get((case_id, "mask"))
        if image is None or mask is None:
            have, lacks = (image, "mask") if mask is None else (mask, "image")
            raise SegstudyError(f"{have}: no {lacks} beside it (expected {case_id}_{lacks}{PAIR.match(have.name)['suffix']})")  # type: ignore[index]
        if PAIR.match(image.name)["suffix"] != PAIR.match(mask.name)["suffix"]:  # type: ignore[index]
            raise SegstudyError(f"{mask}: not the format of {image.name}; accepted: both PNG or both NIfTI")
        cases.append(PairCase(case_id, image, mask))
    kinds = {case.kind for case in cases}
    if len(kinds) > 1:
        raise SegstudyError(f"{where}: {folder} mixes PNG and NIfTI pairs; accepted: one format per folder")
    return cases[:max_cases]


def read_png_pair(case: PairCase) -> tuple[np.ndarray, np.ndarray]:
    """(image (C, H, W) float32 as stored, mask (H, W) integers) of a PNG pair.

    Raises:
        SegstudyError: naming the file that cannot be read, a colour mask, or a mask of another size.
    """
    image = _png(case.image)
    mask = _png(case.mask)
    if mask.ndim != 2:
        raise SegstudyError(f"{case.mask}: a colour mask; accepted: a greyscale PNG of label values")
    channels = image[None] if image.ndim == 2 else np.moveaxis(image[..., :3], -1, 0)
    if channels.shape[1:] != mask.shape:
        raise SegstudyError(f"{case.mask}: size {list(mask.shape)} differs from {list(channels.shape[1:])} of {case.image.name}")
    return channels.astype(np.float32), mask.astype(np.int64)


def _png(path: Path) -> np.ndarray:
    try:
        with warnings.catch_warnings():  # PIL warns on large images; the size is checked right below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                check_claimed_size((img.height, img.width), label=str(path), unit="pixels")
                return np.asarray(img)
    except Image.DecompressionBombError as exc:
        raise SegstudyError(f"{path}: the header claims too many pixels ({first_line(exc)})") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise SegstudyError(f"{path}: cannot read as PNG ({first_line(exc)})") from None


def read_nifti_pair(case: PairCase) -> tuple[NiftiVolume, NiftiVolume]:
    """The image (X, Y, Z[, C]) and label map (X, Y, Z) of a NIfTI pair, on one grid; a 2D file
    (H, W) is read as one slice (H, W, 1).

    Raises:
        SegstudyError: naming the file: unreadable, of the wrong rank, non-finite, non-integer
            labels, or the two files on different grids.
    """
    image = _nifti(case.image, ranks=(2, 3, 4), kind="image")
    label = _nifti(case.mask, ranks=(2, 3), kind="mask")
    check_same_grid(image, label)
    return image, label


def _nifti(path: Path, *, ranks: tuple[int, ...], kind: str) -> NiftiVolume:
    img = open_nifti(path, label=str(path))
    if len(img.shape) not in ranks:
        raise SegstudyError(f"{path}: {kind} of shape {tuple(img.shape)}; accepted: {' or '.join(f'{r}D' for r in ranks)}")
    with np.errstate(over="ignore"):
        data = read_voxels(img, label=str(path)).astype(np.float32 if kind == "image" else np.float64, copy=False)
    check_finite(data, label=str(path), what=kind)
    if kind == "mask":
        if not np.array_equal(data, np.rint(data)):
            raise SegstudyError(f"{path}: mask holds non-integer values; accepted: integer labels")
        data = data.astype(np.int32)
    if data.ndim == 2:  # a 2D file: one slice
        data = data[..., None]
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.isfinite(affine).all():
        raise SegstudyError(f"{path}: affine holds non-finite values")
    return NiftiVolume(data=data, affine=affine, path=path)


__all__ = ["PairCase", "find_pairs", "read_nifti_pair", "read_png_pair"]
