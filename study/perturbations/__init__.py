"""Perturbations for robustness evaluation: one registry entry per corruption, five severities each.

Every entry is a `Perturbation` (see `base.py`): `apply(image, severity=, seed=, mask=)` returns
the corrupted image and the realised parameters; severity 0 is the identity. Derive the seed with
`condition_seed` so every architecture is evaluated on the same pixels. Adding a perturbation is
one class in a family module and one line in `PERTURBATIONS`.

Example:
    >>> import numpy as np
    >>> image = np.full((1, 16, 16), 0.5, np.float32)
    >>> noise = get_perturbation("gaussian_noise")
    >>> seed = condition_seed(0, "case_001", noise.name, 3)
    >>> out, params = noise.apply(image, severity=3, seed=seed)
    >>> params, out.shape, out.dtype
    ({'std': 0.1}, (1, 16, 16), dtype('float32'))
"""

from __future__ import annotations

from typing import Any

from study.errors import unknown_name
from study.perturbations.base import N_SEVERITIES, Perturbation, condition_seed
from study.perturbations.blur import BackgroundBlur, GaussianBlur
from study.perturbations.intensity import BiasField, GammaContrast
from study.perturbations.mri import GibbsRinging, KSpaceSpike
from study.perturbations.noise import GaussianNoise, RicianNoise, SaltPepper, Speckle
from study.perturbations.resolution import Downsampling
from study.perturbations.texture import ForegroundTextureShift

_ALL: tuple[Perturbation, ...] = (
    GaussianNoise(),
    Speckle(),
    RicianNoise(),
    SaltPepper(),
    GaussianBlur(),
    BackgroundBlur(),
    ForegroundTextureShift(),
    BiasField(),
    GammaContrast(),
    Downsampling(),
    KSpaceSpike(),
    GibbsRinging(),
)

PERTURBATIONS: dict[str, Perturbation] = {p.name: p for p in _ALL}


def get_perturbation(name: str, *, where: str = "perturbations") -> Perturbation:
    """The registered perturbation `name`; an unknown name raises a did-you-mean `SegstudyError`.

    Example:
        >>> get_perturbation("speckle").levels
        (0.05, 0.1, 0.2, 0.3, 0.5)
    """
    try:
        return PERTURBATIONS[name]
    except KeyError:
        raise unknown_name("perturbation", name, PERTURBATIONS, where=where) from None


def describe() -> list[dict[str, Any]]:
    """One row per registered perturbation for the report: name, parameter, levels and flags.

    Example:
        >>> describe()[0]["name"], describe()[0]["parameter"]
        ('gaussian_noise', 'std (intensity units)')
    """
    return [
        {
            "name": p.name,
            "parameter": p.parameter,
            "levels": list(p.levels),
            "stochastic": p.stochastic,
            "needs_mask": p.needs_mask,
        }
        for p in PERTURBATIONS.values()
    ]


__all__ = [
    "N_SEVERITIES",
    "PERTURBATIONS",
    "BackgroundBlur",
    "BiasField",
    "Downsampling",
    "ForegroundTextureShift",
    "GammaContrast",
    "GaussianBlur",
    "GaussianNoise",
    "GibbsRinging",
    "KSpaceSpike",
    "Perturbation",
    "RicianNoise",
    "SaltPepper",
    "Speckle",
    "condition_seed",
    "describe",
    "get_perturbation",
]
