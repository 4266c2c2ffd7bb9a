"""Read one image for prediction and write its mask back in the input's own geometry.

NIfTI volumes are reoriented to RAS (as the study's MSD loader does) for the network and the
mask is turned back, so the written mask shares the input's voxel grid, affine and header.
PNG images are read as the study exports them: 8-bit greyscale scaled to [0, 1]; masks are
written 0/255 like `segstudy data synth`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform
from PIL import Image, UnidentifiedImageError

from study.errors import SegstudyError

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
    if not path.is_file():
        raise SegstudyError(f"--input {path}: file not found")
    return _read_nifti(path) if file_kind(path, option="--input") == "nifti" else _read_png(path)


def _read_png(path: Path) -> InputImage:
    try:
        pixels = np.asarray(Image.open(path))
    except (UnidentifiedImageError, OSError) as exc:
        raise SegstudyError(f"--input {path}: cannot read as PNG ({exc})") from None
    scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(pixels.dtype, 1.0)
    grey = pixels.astype(np.float32) / scale
    if grey.ndim == 3:  # RGB(A): the study's images are greyscale
        grey = grey[..., :3].mean(axis=-1)

    def write(mask: np.ndarray, out: Path) -> None:
        Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(out)

    return InputImage(image=grey[None], write_mask=write, spatial_dims=2)


def _read_nifti(path: Path) -> InputImage:
    try:
        img = nib.load(path)
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise SegstudyError(f"--input {path}: cannot read as NIfTI ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    if data.ndim not in (2, 3, 4) or not np.isfinite(data).all():
        raise SegstudyError(f"--input {path}: need a finite 2D, 3D or 4D (channels last) image, got shape {data.shape}")
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
