"""MRI acquisition artefacts in k-space: a spike (herringbone stripes), Gibbs ringing (truncation),
patient motion and ghosting.

Motion and ghosting are TorchIO's (F. Perez-Garcia, R. Sparks, S. Ourselin, "TorchIO: a Python
library for efficient loading, preprocessing, augmentation and patch-based sampling of medical
images in deep learning", CMPB 2021; the artefacts as in R. Shaw et al., "MRI k-space motion
artefact augmentation", MIDL 2019), the two artefacts ROOD-MRI (docs/ARCHITECTURE.md 5) benchmarks
with them; MONAI has neither. TorchIO is imported when one is applied, not with the registry.
"""

from __future__ import annotations

import math

import numpy as np
from monai.transforms import GibbsNoise, RandKSpaceSpikeNoise

from study.perturbations.base import Perturbation, Result, run_monai, run_torchio


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


class Motion(Perturbation):
    """Rigid patient motion during the acquisition (TorchIO Motion): k-space is filled at the
    starting position up to 55% of the acquisition, then at two other positions (55-75%, 75-100%).

    Each movement rotates by the level in degrees and translates by half the level in voxels, the
    two in opposite directions (in plane for a 2D image). Magnitudes and directions are fixed, so a
    severity means one amount of motion and every image meets the same one (TorchIO's RandomMotion
    draws them: its severities came out of order on the same image). The k-space centre is
    acquired at the starting position: the object stays put, its edges ghost and blur. TorchIO
    fills k-space along the last axis, so a 2D image (H, W) goes to it as (H, 1, W): as (H, W, 1),
    its one-plane last axis would take the whole image from the last position, a rigid shift
    without an artefact.
    """

    name = "motion"
    parameter = "rotation (degrees; translation half as many voxels) of each of 2 movements"
    default_levels = (1.0, 2.0, 3.0, 5.0, 8.0)
    limits = (0.0, 90.0)
    stochastic = False

    def _perturb(self, image: np.ndarray, *, value: float, seed: int, mask: np.ndarray | None) -> Result:
        import torchio as tio

        flat = image.ndim == 3  # (C, H, W) -> (C, H, 1, W): rotate about axis 1, move along 0 and 2
        if flat:
            axes = np.array([[0.0, 1.0, 0.0], [0.0, -1.0, 0.0]])
            directions = np.array([[1.0, 0.0, 1.0], [-1.0, 0.0, 1.0]]) / np.sqrt(2)
        else:
            axes = np.array([[1.0, 1.0, 1.0], [-1.0, 1.0, -1.0]]) / np.sqrt(3)
            directions = axes
        degrees, translation = value * axes, 0.5 * value * directions
        transform = tio.Motion(
            degrees=degrees.astype(np.float32), translation=translation.astype(np.float32),
            times=np.array([0.55, 0.75], np.float32), image_interpolation="linear",
        )
        volume = image[:, :, None, :] if flat else image
        out, _ = run_torchio(transform, volume, seed=seed)
        return (out[:, :, 0, :] if flat else out), {"degrees": value, "translation_voxels": 0.5 * value}


class Ghosting(Perturbation):
    """Ghosts along the phase-encoding direction from periodic motion (TorchIO RandomGhosting):
    four ghosts along the first spatial axis, their strength the level.

    The level is the artefact's strength relative to the k-space maximum (TorchIO's `intensity`).
    TorchIO would draw the strength, the number of ghosts and the axis; all three are fixed here,
    so a severity is one artefact and every image and arm sees it the same way.
    """

    name = "ghosting"
    parameter = "ghost strength, fraction of the k-space maximum (4 ghosts along the first axis)"
    default_levels = (0.1, 0.25, 0.5, 0.75, 1.0)
    limits = (0.0, 1.0)
    stochastic = False

    def _perturb(self, image: np.ndarray, *, value: float, seed: int, mask: np.ndarray | None) -> Result:
        import torchio as tio

        transform = tio.RandomGhosting(num_ghosts=(4, 4), axes=(0,), intensity=(value, value))
        out, drawn = run_torchio(transform, image, seed=seed)
        return out, {**drawn, "intensity": value}  # TorchIO's float32 draw of the fixed level
