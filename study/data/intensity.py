"""Intensity normalisations a dataset applies before training, by name.

`segstudy predict` applies the same one to a new image, so it is recorded with every model.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

PERCENTILES = (0.5, 99.5)


def scale_percentiles(image: np.ndarray) -> np.ndarray:
    """Each channel mapped linearly so its 0.5th/99.5th percentiles become 0/1, then clipped."""
    out = np.empty_like(image, dtype=np.float32)
    for c, channel in enumerate(image):
        lo, hi = np.percentile(channel, PERCENTILES)
        out[c] = np.clip((channel - lo) / (hi - lo), 0.0, 1.0) if hi > lo else 0.0
    return out


def as_is(image: np.ndarray) -> np.ndarray:
    """Synthetic data are generated in [0, 1] already."""
    return np.asarray(image, dtype=np.float32)


INTENSITY: dict[str, Callable[[np.ndarray], np.ndarray]] = {"as_is": as_is, "percentile": scale_percentiles}
