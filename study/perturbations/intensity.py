"""Intensity perturbations: smooth multiplicative bias field (MRI inhomogeneity) and gamma contrast."""

from __future__ import annotations

import numpy as np
from monai.transforms import AdjustContrast, RandBiasField

from study.perturbations.base import Perturbation, Result, run_monai

BIAS_FIELD_DEGREE = 3


class BiasField(Perturbation):
    """Multiply by a smooth field exp(p(x)), p a random degree-3 Legendre polynomial (MONAI RandBiasField).

    MONAI draws the polynomial's coefficients from a range, so at one range the field's strength
    still varies a lot from seed to seed and severity 2 can come out milder than severity 1 for an
    image. Here MONAI draws the shape (coefficients uniform in [-1, 1]) and the log field is scaled
    so its mean absolute value over the image is the severity's value: 0.1 is a gain off by about
    10% on average, whatever the seed. (Scaling to the RMS instead left a 2x spread in the mean
    change between seeds: peaky fields have a small mean for their RMS.) The image's change still
    varies by up to ~1.5x between seeds, as the field may sit over bright or dark regions, so the
    levels are spaced at least 1.5x apart. Every channel gets the same field (one receive coil).
    """

    name = "bias_field"
    parameter = "mean |log gain| of the bias field over the image (unitless; 0.1 ~ 10% gain error)"
    default_levels = (0.05, 0.1, 0.15, 0.25, 0.4)
    limits = (0.0, 5.0)
    stochastic = True

    def _perturb(self, image: np.ndarray, *, value: float, seed: int, mask: np.ndarray | None) -> Result:
        transform = RandBiasField(degree=BIAS_FIELD_DEGREE, coeff_range=(-1.0, 1.0), prob=1.0)
        field = run_monai(transform, np.ones((1, *image.shape[1:]), np.float32), seed=seed)[0]
        log_field = np.log(field.astype(np.float64))
        scale = value / float(np.mean(np.abs(log_field)))
        out = image * np.exp(scale * log_field)[None]
        # MONAI keeps the drawn coefficients only in this private attribute; scaled, they are the
        # Legendre coefficients of the log field actually applied.
        coefficients = [scale * c for c in transform._coeff]
        params = {"mean_abs_log_gain": value, "degree": BIAS_FIELD_DEGREE, "coefficients": coefficients}
        return out.astype(np.float32), params


class GammaContrast(Perturbation):
    """Gamma transform of the min-max normalised image, range restored (MONAI AdjustContrast).

    Default severities move gamma away from 1 upward (darker mid-tones, compressed dark range);
    decreasing levels below 1 may be passed instead for the brightening direction.
    """

    name = "gamma_contrast"
    parameter = "gamma (unitless, 1 = identity)"
    default_levels = (1.25, 1.5, 2.0, 2.5, 3.0)
    limits = (0.05, 20.0)
    stochastic = False

    def _perturb(self, image: np.ndarray, *, value: float, seed: int, mask: np.ndarray | None) -> Result:
        return run_monai(AdjustContrast(gamma=value), image), {"gamma": value}
