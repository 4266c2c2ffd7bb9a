"""What a model's soft prediction says about its own quality, and where an image lies.

The quality score needs no ground truth, so it exists for a new image too: the soft Dice
between the probability map and its own thresholded mask. A confident model (probabilities near
0 and 1) scores near 1; a hesitant one (many probabilities near the threshold) scores lower, and
hesitant predictions are the ones whose Dice tends to be low.
"""

from __future__ import annotations

import numpy as np
from skimage.restoration import estimate_sigma


def quality_score(prob: np.ndarray, *, threshold: float) -> float:
    """Soft Dice of `prob` against `prob > threshold`, in [0, 1].

    An empty thresholded mask scores 1 - mean(prob): confident background scores near 1.

    Example:
        >>> quality_score(np.array([[0.0, 1.0]]), threshold=0.5)
        1.0
    """
    p = np.asarray(prob, dtype=np.float64)
    hard = p > threshold
    denominator = p.sum() + hard.sum()
    if not hard.any():
        return float(1.0 - p.mean())
    return float(2.0 * p[hard].sum() / denominator)


def image_noise(image: np.ndarray) -> float:
    """Noise standard deviation of a channel-first image (wavelet estimate on the channel mean).

    The same estimate `segstudy recommend` uses, so out-of-domain checks and recommendations
    speak about one number.
    """
    return float(estimate_sigma(np.asarray(image, dtype=np.float64).mean(axis=0)))
