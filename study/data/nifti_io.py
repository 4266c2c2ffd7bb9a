"""Safe NIfTI reading for user-supplied datasets: paths stay inside the dataset root, and every
unreadable, corrupt or non-finite file becomes a one-line `SegstudyError` naming the file.

Readers return plain numpy data with the file's affine; orientation and resampling are the
loader's job (MONAI transforms in `study.data.msd`).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.imageglobals import LoggingOutputSuppressor

from study.errors import SegstudyError, first_line

# Image and label affines written by different tools differ in the last digits; 1e-3 mm is far
# below any voxel size, so a larger difference means the files do not share a grid.
AFFINE_ATOL = 1e-3
AFFINE_RTOL = 1e-4

# What nibabel and the gzip layer raise for truncated, corrupt or non-NIfTI files.
_READ_ERRORS = (ImageFileError, OSError, EOFError, zlib.error, ValueError, TypeError, MemoryError)

# The most voxels one image may claim: 2^30 is 4 GiB as float32, above the largest MSD volume
# (about 2.6e8). A header's dimensions decide the allocation, so they are checked before reading.
MAX_VOXELS = 1 << 30


@dataclass(frozen=True)
class NiftiVolume:
    """Voxel data and the voxel-to-world (RAS mm) affine of one NIfTI file.

    Attributes:
        data: (X, Y, Z) or (X, Y, Z, C) array as stored (float32 for images, integer for labels).
        affine: float64 (4, 4).
        path: the file it came from, for error messages.
    """

    data: np.ndarray
    affine: np.ndarray
    path: Path


def resolve_inside(root: Path, relative: str, *, where: str) -> Path:
    """`root / relative`, refusing absolute paths and any path that resolves outside `root`.

    Symlinks are followed before the check, so a link pointing out of the root is refused too.

    Args:
        root: the dataset root folder.
        relative: a path as written in a manifest such as dataset.json ("./imagesTr/x.nii.gz").
        where: what names the path in errors (e.g. "dataset.json: training[3].image").

    Raises:
        SegstudyError: for an absolute path, a path leaving the root, or a missing file.

    Example:
        >>> resolve_inside(Path("Task09_Spleen"), "../secrets.nii.gz", where="dataset.json")  # doctest: +SKIP
        SegstudyError: dataset.json: path '../secrets.nii.gz' leaves the dataset root ...
    """
    if not isinstance(relative, str) or not relative:
        raise SegstudyError(f"{where}: expected a relative file path, got {relative!r}")
    if Path(relative).is_absolute():
        raise SegstudyError(f"{where}: path '{relative}' is absolute; accepted: paths relative to {root}")
    root_resolved = root.resolve()
    path = (root_resolved / relative).resolve()
    if not path.is_relative_to(root_resolved):
        raise SegstudyError(f"{where}: path '{relative}' leaves the dataset root {root_resolved}")
    if not path.is_file():
        raise SegstudyError(f"{path}: file not found (listed in {where})")
    return path


def open_nifti(path: Path, *, label: str) -> nib.Nifti1Image | nib.Nifti2Image:
    """The NIfTI image at `path` with its header read and checked, its voxels not yet read.

    Args:
        label: what names the file in errors (the path, or e.g. "--input scan.nii.gz").

    Raises:
        SegstudyError: the file cannot be read as NIfTI, or its header claims an empty or
            negative dimension or more than MAX_VOXELS voxels (refused before any allocation).
    """
    try:
        with LoggingOutputSuppressor():  # nibabel prints its header repairs; the error below says it
            img = nib.load(path)
    except _READ_ERRORS as exc:
        raise SegstudyError(f"{label}: cannot read as NIfTI ({first_line(exc)})") from None
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise SegstudyError(f"{label}: is a {type(img).__name__}, not NIfTI; accepted: .nii or .nii.gz")
    check_claimed_size(img.shape, label=label, unit="voxels")
    return img


def check_claimed_size(shape: Sequence[int], *, label: str, unit: str) -> None:
    """Refuse a header whose dimensions are not all >= 1 or whose product exceeds MAX_VOXELS.

    Example:
        >>> check_claimed_size((3000, 3000, 3000), label="x.nii", unit="voxels")  # doctest: +SKIP
        SegstudyError: x.nii: the header claims 3000 x 3000 x 3000 = 2.7e+10 voxels (100.6 GiB as
        float32); the limit is 1073741824 voxels (4 GiB)
    """
    sides = [int(s) for s in shape]
    claimed = " x ".join(map(str, sides))
    if not sides or min(sides) < 1:
        raise SegstudyError(f"{label}: the header claims shape {claimed or '()'}; every dimension must be at least 1")
    count = math.prod(sides)
    if count > MAX_VOXELS:
        raise SegstudyError(
            f"{label}: the header claims {claimed} = {count:.3g} {unit} ({count * 4 / 2**30:.1f} GiB as float32); "
            f"the limit is {MAX_VOXELS} {unit} ({MAX_VOXELS * 4 // 2**30} GiB)"
        )


def read_voxels(img: nib.Nifti1Image | nib.Nifti2Image, *, label: str) -> np.ndarray:
    """Every voxel of an image from `open_nifti` (scaled as the header says); decompression and
    truncation errors become a one-line SegstudyError naming `label`."""
    try:
        with LoggingOutputSuppressor():
            return np.asarray(img.dataobj)  # forces decompression: corrupt data fails here, not later
    except _READ_ERRORS as exc:
        raise SegstudyError(f"{label}: cannot read as NIfTI ({first_line(exc)})") from None


def check_finite(data: np.ndarray, *, label: str, what: str) -> None:
    """Refuse NaN or infinite voxels, naming how many and where the first one is."""
    bad = ~np.isfinite(data)
    count = int(np.count_nonzero(bad))
    if count:
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise SegstudyError(
            f"{label}: {what} holds {count} non-finite voxel(s) (NaN or inf; first at index {first}); "
            "accepted: finite values"
        )


def read_nifti(path: Path, *, kind: str) -> NiftiVolume:
    """Read a NIfTI image ("image": float32, finite, 3D or 4D) or label map ("label": 3D integers).

    Raises:
        SegstudyError: naming `path` if the file cannot be read or decoded, its header claims a
            size beyond MAX_VOXELS, it has the wrong number of dimensions, an image holds NaN/inf
            voxels, or a label holds non-finite or non-integer values.
    """
    img = open_nifti(path, label=str(path))
    ndims = (3, 4) if kind == "image" else (3,)
    if len(img.shape) not in ndims:
        raise SegstudyError(f"{path}: {kind} has shape {img.shape}; accepted: {' or '.join(f'{n}D' for n in ndims)}")
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.isfinite(affine).all():
        raise SegstudyError(f"{path}: affine holds non-finite values")
    data = read_voxels(img, label=str(path))
    if kind == "image":
        with np.errstate(over="ignore"):  # a value beyond float32 becomes inf, refused just below
            data = data.astype(np.float32, copy=False)
        check_finite(data, label=str(path), what="image (as float32)")
    elif not np.issubdtype(data.dtype, np.integer):
        check_finite(data, label=str(path), what="label map")
        if not np.array_equal(data, np.rint(data)):
            raise SegstudyError(f"{path}: label map holds non-integer values; accepted: integer labels")
        data = data.astype(np.int32)
    return NiftiVolume(data=data, affine=affine, path=path)


def check_same_grid(image: NiftiVolume, label: NiftiVolume) -> None:
    """Raise `SegstudyError` naming the label file if it is not on the image's voxel grid."""
    if image.data.shape[:3] != label.data.shape:
        raise SegstudyError(
            f"{label.path}: label shape {label.data.shape} does not match image shape "
            f"{image.data.shape[:3]} of {image.path.name}"
        )
    if not np.allclose(image.affine, label.affine, rtol=AFFINE_RTOL, atol=AFFINE_ATOL):
        worst = float(np.max(np.abs(image.affine - label.affine)))
        raise SegstudyError(
            f"{label.path}: label affine differs from the affine of {image.path.name} by up to "
            f"{worst:.3g} (tolerance {AFFINE_ATOL} mm): the files do not share a voxel grid"
        )


def ras_spacing(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel sizes (mm) along the axes of the RAS-reoriented volume, from the file's affine."""
    sizes = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    out = np.empty(3)
    out[nib.orientations.io_orientation(affine)[:, 0].astype(int)] = sizes
    return tuple(float(s) for s in out)  # type: ignore[return-value]
