"""Texture disparity (TD): how different the foreground texture is from the background.

The measure of task complexity from the skip-connection study (docs/ARCHITECTURE.md 4.1): the KL divergence
(in bits) between the histograms of uniform local binary pattern codes inside and outside the
mask. Larger TD = the object is easier to tell from its surroundings by texture alone.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
from skimage.feature import local_binary_pattern

# LBP codes of recent images, by their bytes: a confirm trial measures TD on the same test and
# calibration images (clean, perturbed, shifted) under their true and predicted masks, and every
# trial of a worker on the same images again; the codes depend on the image alone. Bounded by bytes.
_CODES: OrderedDict[tuple[bytes, tuple[int, ...], int, float], np.ndarray] = OrderedDict()
_CODES_BYTES = 0
CODES_BUDGET = 64 * 2**20


def texture_disparity(image: np.ndarray, mask: np.ndarray, *, P: int = 24, R: float = 3) -> float:
    """TD = sum_i p_i log2(p_i / q_i) over uniform-LBP histograms of foreground (p) and background (q).

    Bins where either histogram is zero are skipped, as in the reference study.

    Args:
        image: 2D float image with values in [0, 1], or the same with a leading channel axis of 1.
        mask: foreground mask of the same spatial shape (non-zero = foreground), optionally (1, H, W).
        P: number of LBP neighbours; the uniform method gives P + 2 codes.
        R: LBP radius in pixels.

    Returns:
        TD in bits; NaN when the mask is empty or covers the whole image.

    Raises:
        ValueError: if the arrays are not 2D (after dropping a channel axis of 1) or differ in shape.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> img = rng.random((64, 64)); m = np.zeros((64, 64), np.uint8); m[16:48, 16:48] = 1
        >>> texture_disparity(img, m) < 0.1  # the same noise inside and outside: near 0
        True
    """
    image, mask = _as_2d(image, "image"), _as_2d(mask, "mask")
    if image.shape != mask.shape:
        raise ValueError(f"image shape {image.shape} and mask shape {mask.shape} differ")
    fg = mask != 0
    if not fg.any() or fg.all():
        return float("nan")
    # LBP on uint8: float input makes skimage warn, and [0, 1] floats would all compare as equal
    # after its internal conversion.
    grey = np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)
    codes = _uniform_lbp(grey, P, R)
    n_bins = P + 2
    p = np.bincount(codes[fg], minlength=n_bins) / fg.sum()
    q = np.bincount(codes[~fg], minlength=n_bins) / (~fg).sum()
    both = (p > 0) & (q > 0)
    return float(np.sum(p[both] * np.log2(p[both] / q[both])))


def _uniform_lbp(grey: np.ndarray, P: int, R: float) -> np.ndarray:
    """skimage's uniform LBP codes of a uint8 image (P + 2 codes, so uint8 holds them), cached."""
    global _CODES_BYTES
    key = (grey.tobytes(), grey.shape, P, R)
    codes = _CODES.get(key)
    if codes is not None:
        _CODES.move_to_end(key)
        return codes
    codes = local_binary_pattern(grey, P, R, method="uniform").astype(np.uint8 if P + 2 <= 256 else np.int64)
    codes.setflags(write=False)
    _CODES[key] = codes
    _CODES_BYTES += len(key[0]) + codes.nbytes
    while _CODES_BYTES > CODES_BUDGET and _CODES:
        (old_key, old_codes) = _CODES.popitem(last=False)
        _CODES_BYTES -= len(old_key[0]) + old_codes.nbytes
    return codes


def _as_2d(arr: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2D or (1, H, W), got shape {arr.shape}")
    return arr
