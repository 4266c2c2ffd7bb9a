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

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from study.errors import SegstudyError, unknown_name
from study.perturbations.base import N_SEVERITIES, Perturbation, condition_seed
from study.perturbations.blur import BackgroundBlur, GaussianBlur
from study.perturbations.intensity import BiasField, GammaContrast
from study.perturbations.mri import GibbsRinging, Ghosting, KSpaceSpike, Motion
from study.perturbations.noise import GaussianNoise, RicianNoise, SaltPepper, Speckle
from study.perturbations.resolution import Downsampling
from study.perturbations.target import TargetPerturbation, describe_entry
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
    Motion(),
    Ghosting(),
)

PERTURBATIONS: dict[str, Perturbation] = {p.name: p for p in _ALL}


_NONE: Mapping[str, Any] = MappingProxyType({})


def custom_perturbations(section: Mapping[str, Any]) -> dict[str, Perturbation]:
    """The spec's ``perturbations:`` section as perturbations, each checked (study/perturbations/target.py).

    Raises:
        SegstudyError: ``perturbations.<name>...: ...`` for a name a built-in has, a bad name, or
            an entry whose target, arguments or severities are not accepted.
    """
    out: dict[str, Perturbation] = {}
    for name, entry in section.items():
        where = f"perturbations.{name}"
        if name in PERTURBATIONS:
            raise SegstudyError(f"{where}: the name is taken by a built-in perturbation; choose another")
        out[name] = TargetPerturbation(str(name), entry, where=where)
    return out


def get_perturbation(name: str, *, custom: Mapping[str, Any] = _NONE, where: str = "perturbations") -> Perturbation:
    """The perturbation `name`: a spec's own (``custom``, its ``perturbations:`` section) or a
    registered one; an unknown name raises a did-you-mean `SegstudyError`.

    Example:
        >>> get_perturbation("speckle").levels
        (0.05, 0.1, 0.2, 0.3, 0.5)
    """
    if name in custom and name not in PERTURBATIONS:
        return TargetPerturbation(name, custom[name], where=f"perturbations.{name}")
    try:
        return PERTURBATIONS[name]
    except KeyError:
        raise unknown_name("perturbation", name, [*PERTURBATIONS, *custom], where=where) from None


def describe(custom: Mapping[str, Any] = _NONE) -> list[dict[str, Any]]:
    """One row per perturbation for the report: name, parameter, levels and flags; the registered
    ones, then a spec's own (``custom``, read from the spec without importing: its levels are each
    severity's arguments as text).

    Example:
        >>> describe()[0]["name"], describe()[0]["parameter"]
        ('gaussian_noise', 'std (intensity units)')
    """
    registered = [
        {
            "name": p.name,
            "parameter": p.parameter,
            "levels": list(p.levels),
            "stochastic": p.stochastic,
            "needs_mask": p.needs_mask,
        }
        for p in PERTURBATIONS.values()
    ]
    return registered + [describe_entry(str(name), entry) for name, entry in custom.items() if name not in PERTURBATIONS]


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
    "Ghosting",
    "KSpaceSpike",
    "Motion",
    "Perturbation",
    "RicianNoise",
    "SaltPepper",
    "Speckle",
    "TargetPerturbation",
    "condition_seed",
    "custom_perturbations",
    "describe",
    "get_perturbation",
]
