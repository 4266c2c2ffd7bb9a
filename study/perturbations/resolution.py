"""Resolution loss: acquire at coarser voxels, then resample back to the original grid."""

from __future__ import annotations

import numpy as np
from monai.transforms import Resize

from study.perturbations.base import Perturbation, Result, run_monai


class Downsampling(Perturbation):
    """Downsample every spatial axis by a factor, then upsample back to the original shape (MONAI Resize).

    Downsampling uses area averaging (a coarse voxel integrates the fine ones it covers, like a
    thicker acquisition); upsampling is (bi/tri)linear, as a viewer or resampling pipeline would do.
    """

    name = "downsampling"
    parameter = "downsampling factor per spatial axis (unitless)"
    default_levels = (1.5, 2.0, 2.5, 3.0, 4.0)
    limits = (1.0, 64.0)
    stochastic = False

    def _perturb(self, image: np.ndarray, *, value: float, seed: int, mask: np.ndarray | None) -> Result:
        spatial = image.shape[1:]
        low = tuple(max(1, int(round(n / value))) for n in spatial)
        up_mode = "bilinear" if len(spatial) == 2 else "trilinear"
        coarse = run_monai(Resize(spatial_size=low, mode="area"), image)
        out = run_monai(Resize(spatial_size=spatial, mode=up_mode, align_corners=False), coarse)
        return out, {"factor": value, "low_res_shape": low}
