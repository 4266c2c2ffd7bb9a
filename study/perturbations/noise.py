"""Noise perturbations: additive Gaussian, multiplicative speckle, Rician (MRI magnitude), salt & pepper.

Gaussian and Rician noise use MONAI's transforms with `sample_std=False`, so the severity's value
is the noise level itself rather than an upper bound MONAI would sample below.
"""

from __future__ import annotations

import numpy as np
from monai.transforms import RandGaussianNoise, RandRicianNoise

from study.perturbations.base import Perturbation, Result, run_monai


class GaussianNoise(Perturbation):
    """Additive zero-mean Gaussian noise (MONAI RandGaussianNoise)."""

    name = "gaussian_noise"
    parameter = "std (intensity units)"
    default_levels = (0.02, 0.05, 0.1, 0.15, 0.2)
    limits = (0.0, 10.0)
    stochastic = True

    def _perturb(self, image: np.ndarray, *, value: float, seed: int, mask: np.ndarray | None) -> Result:
        transform = RandGaussianNoise(prob=1.0, mean=0.0, std=value, sample_std=False)
        return run_monai(transform, image, seed=seed), {"std": value}


class RicianNoise(Perturbation):
    """Rician noise, the noise of MRI magnitude images: |image + n1 + i*n2| (MONAI RandRicianNoise).

    Unlike Gaussian noise it is biased upward in dark regions, which is why it is tested separately.
    """

    name = "rician_noise"
    parameter = "std of each Gaussian component (intensity units)"
    default_levels = (0.02, 0.05, 0.1, 0.15, 0.2)
    limits = (0.0, 10.0)
    stochastic = True

    def _perturb(self, image: np.ndarray, *, value: float, seed: int, mask: np.ndarray | None) -> Result:
        transform = RandRicianNoise(prob=1.0, mean=0.0, std=value, relative=False, sample_std=False)
        return run_monai(transform, image, seed=seed), {"std": value}


class Speckle(Perturbation):
    """Multiplicative noise image * (1 + n), n ~ N(0, variance), as skimage's `random_noise` speckle.

    The skip-connection study's out-of-domain test used variance 0.1 and 0.3 (severities 2 and 4
    here). Like skimage's default (`clip=True`) the result is clipped, to [0, 1] widened to the
    image's own range so images outside [0, 1] are not cut.
    """

    name = "speckle"
    parameter = "variance of the multiplicative noise (unitless)"
    default_levels = (0.05, 0.1, 0.2, 0.3, 0.5)
    limits = (0.0, 10.0)
    stochastic = True

    def _perturb(self, image: np.ndarray, *, value: float, seed: int, mask: np.ndarray | None) -> Result:
        rng = np.random.default_rng(seed)
        noise = rng.normal(0.0, np.sqrt(value), size=image.shape)
        lo, hi = min(0.0, float(image.min())), max(1.0, float(image.max()))
        out = np.clip(image + image * noise, lo, hi)
        return out.astype(np.float32), {"variance": value}


class SaltPepper(Perturbation):
    """Set a fraction of voxels to the image's minimum (pepper) or maximum (salt), half each on average.

    A voxel is hit in all channels at once (a dead or saturated detector element). The image's own
    extremes are used rather than 0 and 1 so the corruption stays inside the data's range.
    """

    name = "salt_pepper"
    parameter = "fraction of voxels replaced (unitless)"
    default_levels = (0.01, 0.02, 0.05, 0.1, 0.2)
    limits = (0.0, 1.0)
    stochastic = True

    def _perturb(self, image: np.ndarray, *, value: float, seed: int, mask: np.ndarray | None) -> Result:
        rng = np.random.default_rng(seed)
        n_voxels = int(np.prod(image.shape[1:]))
        n_hit = int(round(value * n_voxels))
        hit = rng.choice(n_voxels, size=n_hit, replace=False)
        salt = rng.random(n_hit) < 0.5
        out = image.reshape(image.shape[0], n_voxels).copy()
        out[:, hit[salt]] = image.max()
        out[:, hit[~salt]] = image.min()
        return out.reshape(image.shape), {"fraction": value, "n_voxels": n_hit}
