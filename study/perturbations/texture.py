"""Foreground texture shift: make the object's texture more like its background (lowers TD).

The counterpart of background blur: where that raises texture disparity, this lowers it, moving
an image toward the "harder" end of the skip-connection study's complexity axis (docs/ARCHITECTURE.md 4.1).
"""

from __future__ import annotations

import itertools

import numpy as np

from study.perturbations.base import Perturbation, Result

# Candidate displacements, as fractions of each spatial axis, for borrowing background texture.
_SHIFT_FRACTIONS = (0.0, 0.25, 0.5, 0.75)


def background_source_shift(mask: np.ndarray) -> tuple[tuple[int, ...], float]:
    """The circular shift that moves the most background under the foreground.

    Tries every combination of 0, 1/4, 1/2 and 3/4 of each spatial axis (except no shift) and
    keeps the first with the fewest foreground voxels whose source is also foreground.

    Returns:
        The shift in voxels per spatial axis and the fraction of foreground voxels whose source
        is foreground anyway (0 for an object smaller than a quarter of the image, away from the
        borders; 0 also for an empty mask).
    """
    n_fg = int(mask.sum())
    best: tuple[tuple[int, ...], int] | None = None
    for fractions in itertools.product(_SHIFT_FRACTIONS, repeat=mask.ndim):
        shift = tuple(int(round(f * n)) for f, n in zip(fractions, mask.shape))
        if not any(shift):
            continue
        overlap = int(np.count_nonzero(mask & np.roll(mask, shift, axis=tuple(range(mask.ndim)))))
        if best is None or overlap < best[1]:
            best = (shift, overlap)
    assert best is not None
    return best[0], (best[1] / n_fg if n_fg else 0.0)


class ForegroundTextureShift(Perturbation):
    """Blend the foreground toward background texture borrowed from elsewhere in the same image.

    The background "texture estimate" is the image circularly shifted (`np.roll`) so that, as far
    as possible, background voxels land on the foreground (`background_source_shift`); it is real
    background texture with its local statistics, not a smoothed mean. Foreground voxels become
    (1 - alpha) * image + alpha * shifted image; background voxels are kept exactly. This mirrors
    the synthetic data's own alpha, mask * ((1-a) T_fg + a T_bg): applied to an image generated at
    a0 it mixes roughly a0 + alpha * (1 - a0) background texture into the object. Mean intensity
    contrast drops along with texture contrast, as in the data model. Where the object is too
    large for any shift to clear it, the uncovered part blends with shifted foreground (reported
    as `overlap_fraction`). Deterministic: the shift depends only on the mask.
    """

    name = "foreground_texture_shift"
    parameter = "alpha, weight of background texture in the foreground (unitless)"
    default_levels = (0.15, 0.3, 0.45, 0.6, 0.75)
    limits = (0.0, 1.0)
    stochastic = False
    needs_mask = True

    def _perturb(self, image: np.ndarray, *, value: float, seed: int, mask: np.ndarray | None) -> Result:
        assert mask is not None  # guaranteed by Perturbation.apply since needs_mask
        shift, overlap = background_source_shift(mask)
        source = np.roll(image, shift, axis=tuple(range(1, image.ndim)))
        blended = (1.0 - value) * image + value * source
        out = np.where(mask[None], blended, image)
        return out.astype(np.float32), {"alpha": value, "shift": shift, "overlap_fraction": overlap}
