"""Write a built dataset level to disk, to look at it or to train other tools on the same pixels.

Layout (fmt "png" or "nifti"):

    out_dir/manifest.csv                    id, split, td, foreground_fraction
    out_dir/{train,val,test}/{id}_image.png | .nii.gz
    out_dir/{train,val,test}/{id}_mask.png  | .nii.gz
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

from study.data.base import LevelData
from study.errors import SegstudyError

MANIFEST_COLUMNS = ("id", "split", "td", "foreground_fraction")


def export_level(level: LevelData, out_dir: Path, *, fmt: str) -> list[Path]:
    """Write every image and mask of `level` plus a manifest under `out_dir`.

    Args:
        level: the four splits to write.
        out_dir: created if missing; files already there with the same names are overwritten.
        fmt: "png" (8-bit greyscale, masks 0/255; 2D single-channel data only) or "nifti"
            (float32 image, uint8 mask, affine diag(spacing..., 1); 2D stored as (H, W, 1)).

    Returns:
        Paths of all written files, the manifest last.

    Raises:
        SegstudyError: for an unknown `fmt`, or "png" with data that is not 2D single-channel.

    Example:
        >>> paths = export_level(level, Path("out"), fmt="nifti")  # doctest: +SKIP
    """
    writers: dict[str, tuple[str, Callable[[np.ndarray, Path, tuple[float, ...]], None]]] = {
        "png": (".png", _write_png),
        "nifti": (".nii.gz", _write_nifti),
    }
    if fmt not in writers:
        raise SegstudyError(f"export format '{fmt}' is not supported; accepted: {', '.join(writers)}")
    suffix, write = writers[fmt]
    if fmt == "png":
        _check_png_compatible(level)
    out_dir = Path(out_dir)
    written: list[Path] = []
    rows: list[dict[str, object]] = []
    for name, split in level.named_splits():
        split_dir = out_dir / name
        split_dir.mkdir(parents=True, exist_ok=True)
        for i, image_id in enumerate(split.ids):
            image_path = split_dir / f"{image_id}_image{suffix}"
            mask_path = split_dir / f"{image_id}_mask{suffix}"
            write(split.images[i], image_path, split.spacing)
            write(split.masks[i], mask_path, split.spacing)
            written += [image_path, mask_path]
            fraction = float(np.mean(split.masks[i] != 0))
            rows.append({"id": image_id, "split": name, "td": float(split.td[i]), "foreground_fraction": fraction})
    manifest = out_dir / "manifest.csv"
    with manifest.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=MANIFEST_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    written.append(manifest)
    return written


def _check_png_compatible(level: LevelData) -> None:
    for name, split in level.named_splits():
        image = split.volume(0)[0]
        if image.ndim != 3 or image.shape[0] != 1:
            raise SegstudyError(
                f"export format 'png' needs 2D single-channel images, but split '{name}' has images of shape "
                f"{image.shape}; use --format nifti"
            )


def _write_png(arr: np.ndarray, path: Path, spacing: tuple[float, ...]) -> None:
    """One (1, H, W) array as 8-bit greyscale: images scaled from [0, 1], masks to 0/255."""
    plane = arr[0]
    if plane.dtype == np.uint8:  # a mask
        pixels = np.where(plane != 0, 255, 0).astype(np.uint8)
    else:
        pixels = np.round(np.clip(plane, 0.0, 1.0) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)  # 2D uint8 -> greyscale "L"


def _write_nifti(arr: np.ndarray, path: Path, spacing: tuple[float, ...]) -> None:
    """One (C, *spatial) array as NIfTI: spatial axes first, a 2D plane gets a z axis of 1.

    A single channel is dropped; several channels become the last axis (NIfTI's 4th dimension).
    """
    data = np.moveaxis(arr, 0, -1)  # (*spatial, C)
    n_spatial = arr.ndim - 1
    if n_spatial == 2:
        data = data[:, :, None, :]  # (H, W, 1, C)
    if data.shape[-1] == 1:
        data = data[..., 0]
    affine = np.diag([*map(float, spacing), *([1.0] * (3 - len(spacing))), 1.0])
    out = data.astype(np.uint8 if arr.dtype == np.uint8 else np.float32)
    nib.save(nib.Nifti1Image(out, affine), str(path))
