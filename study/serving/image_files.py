"""Read one image for prediction and write its mask back in the input's own geometry.

NIfTI volumes are reoriented to RAS (as the study's MSD loader does) for the network and the
mask is turned back, so the written mask shares the input's voxel grid, affine and header.
PNG images are read as the study exports them: 8-bit greyscale scaled to [0, 1]; masks are
written 0/255 like `segstudy data synth`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform
from PIL import Image, UnidentifiedImageError

from study.data.nifti_io import check_claimed_size, check_finite, open_nifti, read_voxels
from study.errors import SegstudyError, first_line
from study.paths import input_file

NIFTI_SUFFIXES = (".nii.gz", ".nii")
PNG_SUFFIX = ".png"
_RAS = axcodes2ornt("RAS")


def file_kind(path: Path, *, option: str) -> str:
    """'nifti' or 'png' from the file name, else a SegstudyError naming the option."""
    name = path.name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(PNG_SUFFIX):
        return "png"
    raise SegstudyError(f"{option} {path}: unsupported file type; accepted: .nii.gz, .nii, .png")


@dataclass
class InputImage:
    """A channel-first float32 image (C, *spatial) in network orientation, and how to write its mask."""

    image: np.ndarray
    write_mask: Callable[[np.ndarray, Path], None]  # mask (*spatial) in network orientation
    spatial_dims: int


def read_input(path: Path) -> InputImage:
    """The image at `path` (every refusal names it as `--input PATH`).

    Raises:
        SegstudyError: not a readable regular file, not a PNG or NIfTI, a header claiming more
            than `study.data.nifti_io.MAX_VOXELS` pixels or voxels, or a non-finite voxel.
    """
    input_file(path, option="--input", what="image file")
    return _read_nifti(path) if file_kind(path, option="--input") == "nifti" else _read_png(path)


def _read_png(path: Path) -> InputImage:
    label = f"--input {path}"
    try:
        with warnings.catch_warnings():  # PIL warns on large images; the size is checked right below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                check_claimed_size((img.height, img.width), label=label, unit="pixels")
                pixels = np.asarray(img)
    except Image.DecompressionBombError as exc:  # beyond PIL's own limit, refused as it opens the file
        raise SegstudyError(f"{label}: the header claims too many pixels ({first_line(exc)})") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise SegstudyError(f"{label}: cannot read as PNG ({first_line(exc)})") from None
    scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(pixels.dtype, 1.0)
    grey = pixels.astype(np.float32) / scale
    if grey.ndim == 3:  # RGB(A): the study's images are greyscale
        grey = grey[..., :3].mean(axis=-1)

    def write(mask: np.ndarray, out: Path) -> None:
        Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(out)

    return InputImage(image=grey[None], write_mask=write, spatial_dims=2)


def _read_nifti(path: Path) -> InputImage:
    label = f"--input {path}"
    img = open_nifti(path, label=label)
    if len(img.shape) not in (2, 3, 4):
        raise SegstudyError(f"{label}: image of shape {img.shape}; accepted: 2D, 3D or 4D (channels last)")
    with np.errstate(over="ignore"):  # a value beyond float32 becomes inf, refused just below
        data = read_voxels(img, label=label).astype(np.float32, copy=False)
    check_finite(data, label=label, what="image (as float32)")
    spatial_shape = data.shape[:3] if data.ndim == 4 else (data.shape + (1,))[:3]
    channels = np.moveaxis(data, -1, 0) if data.ndim == 4 else data.reshape(spatial_shape)[None]
    to_ras = ornt_transform(io_orientation(img.affine), _RAS)
    back = ornt_transform(_RAS, io_orientation(img.affine))
    image = np.stack([apply_orientation(c, to_ras) for c in channels]).astype(np.float32)
    spatial_dims = 3
    if image.shape[-1] == 1:  # one slice: a 2D image for a 2D model
        image, spatial_dims = image[..., 0], 2

    def write(mask: np.ndarray, out: Path) -> None:
        volume = mask if mask.ndim == 3 else mask[..., None]
        original = apply_orientation(volume.astype(np.uint8), back).reshape(spatial_shape)
        if data.ndim == 2:
            original = original[..., 0]
        header = img.header.copy()
        result = type(img)(original, img.affine, header=header)
        result.set_data_dtype(np.uint8)
        result.header.set_slope_inter(1.0, 0.0)
        nib.save(result, out)

    return InputImage(image=image, write_mask=write, spatial_dims=spatial_dims)
