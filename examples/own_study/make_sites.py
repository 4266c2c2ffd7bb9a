"""Make two "sites" of labelled 2D images as NIfTI pairs: data/siteA and data/siteB.

Both sites image the same kind of object (a bright ellipse with a darker rim on a textured
background); site B's scanner gives lower contrast, more noise and an intensity bias across the
field of view, so a model trained at site A meets a shift at site B. Every choice is seeded.

    python make_sites.py            # 32 cases per site, 48 x 48 pixels, in ./data
    python make_sites.py --cases 16 --size 32 --out data
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy.ndimage import gaussian_filter

SITES = {  # contrast between object and background, noise sd, strength of the bias field
    "siteA": {"contrast": 0.45, "noise": 0.04, "bias": 0.0, "seed": 1},
    "siteB": {"contrast": 0.25, "noise": 0.08, "bias": 0.35, "seed": 2},
}


def make_case(rng: np.random.Generator, *, size: int, contrast: float, noise: float, bias: float) -> tuple[np.ndarray, np.ndarray]:
    """One (image, mask) pair: an ellipse at a random place, size and angle."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    cy, cx = rng.uniform(0.3, 0.7, size=2)
    ry, rx = rng.uniform(0.12, 0.25, size=2)
    angle = rng.uniform(0, np.pi)
    dy, dx = yy - cy, xx - cx
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    mask = ((u / rx) ** 2 + (v / ry) ** 2 <= 1.0).astype(np.uint8)
    background = 0.35 + 0.1 * gaussian_filter(rng.normal(size=(size, size)), 2.0)
    image = background + contrast * gaussian_filter(mask.astype(float), 1.0)
    field = 1.0 + bias * (xx - 0.5) + bias * 0.5 * (yy - 0.5)  # a smooth scanner bias
    image = image * field + rng.normal(0, noise, size=(size, size))
    return image.astype(np.float32), mask


def write_site(folder: Path, *, cases: int, size: int, contrast: float, noise: float, bias: float, seed: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])  # 1 mm pixels; a 2D image is stored one slice deep
    for i in range(cases):
        image, mask = make_case(rng, size=size, contrast=contrast, noise=noise, bias=bias)
        nib.save(nib.Nifti1Image(image[..., None], affine), folder / f"case{i:03d}_image.nii.gz")
        nib.save(nib.Nifti1Image(mask[..., None], affine), folder / f"case{i:03d}_mask.nii.gz")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=32, help="cases per site")
    parser.add_argument("--size", type=int, default=48, help="pixels per side")
    parser.add_argument("--out", type=Path, default=Path("data"), help="folder to write siteA/ and siteB/ into")
    args = parser.parse_args()
    for name, site in SITES.items():
        write_site(args.out / name, cases=args.cases, size=args.size, **site)
        print(f"{args.out / name}: {args.cases} cases of {args.size} x {args.size}")


if __name__ == "__main__":
    main()
