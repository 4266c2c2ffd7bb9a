"""MRI acquisition artefacts in k-space: a spike (herringbone stripes) and Gibbs ringing (truncation).

Motion and ghosting are not offered: MONAI 1.6 has no transform for them and torchio, which has,
is not a dependency.
"""

from __future__ import annotations

import math

import numpy as np
from monai.transforms import GibbsNoise, RandKSpaceSpikeNoise

from study.perturbations.base import Perturbation, Result, run_monai


class KSpaceSpike(Perturbation):
    """One bright k-space sample at a random location per channel (MONAI RandKSpaceSpikeNoise).

    MONAI's knob is the log-magnitude written into k-space, whose effect in image space shrinks
    with the number of voxels (the inverse FFT divides by it). The parameter here is instead the
    amplitude of the resulting stripe pattern in intensity units, the same on a 32^2 image and a
    96^3 volume: log-magnitude = log(amplitude * n_voxels). A spike that lands on the k-space
    centre (probability 1 / n_voxels) shifts the mean intensity instead of adding stripes.
    """

    name = "kspace_spike"
    parameter = "stripe amplitude (intensity units)"
    default_levels = (0.02, 0.05, 0.1, 0.15, 0.2)
    limits = (1e-6, 100.0)
    stochastic = True

    def _perturb(self, image: np.ndarray, *, value: float, seed: int, mask: np.ndarray | None) -> Result:
        log_k = math.log(value * math.prod(image.shape[1:]))
        # channel_wise: channels are separate acquisitions, each with its own spike location.
        transform = RandKSpaceSpikeNoise(prob=1.0, intensity_range=(log_k, log_k), channel_wise=True)
        out = run_monai(transform, image, seed=seed)
        locations = [list(loc) for loc in transform.sampled_locs]  # (channel, *spatial index) each
        return out, {"amplitude": value, "log_k_intensity": log_k, "locations": locations}


class GibbsRinging(Perturbation):
    """Ringing at edges from truncating k-space outside a centred sphere (MONAI GibbsNoise).

    alpha is MONAI's parameter: 0 keeps all of k-space (identity), larger alpha keeps a smaller
    sphere of radius (1 - alpha) * max(shape) * sqrt(2) / 2. On a square 2D image alpha below
    1 - 1/sqrt(2) ~ 0.29 still keeps every sample (no effect), hence the levels start at 0.5.
    """

    name = "gibbs_ringing"
    parameter = "alpha, fraction of k-space radius truncated (unitless)"
    default_levels = (0.5, 0.6, 0.7, 0.8, 0.9)
    limits = (0.0, 1.0)
    stochastic = False

    def _perturb(self, image: np.ndarray, *, value: float, seed: int, mask: np.ndarray | None) -> Result:
        return run_monai(GibbsNoise(alpha=value), image), {"alpha": value}
