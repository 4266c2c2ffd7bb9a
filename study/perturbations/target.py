"""A perturbation named by import path in the spec: a MONAI or TorchIO transform, or a user callable.

The spec's ``perturbations:`` section gives each one a name, a ``_target_``, the arguments every
severity shares, and the arguments of each severity 1-5:

    perturbations:
      strong_ghosting:
        _target_: torchio.RandomGhosting
        num_ghosts: [4, 4]
        severities:
          1: {intensity: [0.1, 0.1]}
          ...
          5: {intensity: [1.0, 1.0]}

Each severity's transform is instantiated with MONAI's ConfigParser (`study.targets.instantiate`)
from the shared and the severity's arguments. It is seeded per (image, perturbation, severity) as
the built-ins are (`condition_seed`): a MONAI transform gets its own RandomState; a TorchIO
transform and a user callable draw from torch's global RNG, seeded inside `torch.random.fork_rng`;
a callable that takes an ``rng`` argument also gets a seeded `numpy.random.Generator`. A user
callable is called as ``fn(image, **arguments)`` with a float32 array (C, *spatial) and returns the
perturbed array; a MONAI transform (``prob`` set to 1 unless the spec sets it: MONAI's default of
0.1 would leave 9 images in 10 clean) and a TorchIO transform get what they expect.

Example:
    >>> entry = {"_target_": "monai.transforms.RandGaussianNoise", "severities": {
    ...     s: {"std": 0.05 * s} for s in range(1, 6)}}
    >>> p = TargetPerturbation("noise5", entry, where="perturbations.noise5")
    >>> out, params = p.apply(np.zeros((1, 8, 8), np.float32), severity=2, seed=0)
    >>> params, out.shape
    ({'std': 0.1}, (1, 8, 8))
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from study.errors import SegstudyError, first_line
from study.perturbations.base import N_SEVERITIES, Perturbation, Result, run_monai, run_torchio
from study.targets import TARGET, check_component, instantiate

SEVERITIES = "severities"
NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
SUPPLIED = ("image", "rng")  # what segstudy passes a user callable itself


class TargetPerturbation(Perturbation):
    """A spec's ``perturbations:`` entry: a transform by import path with arguments per severity.

    Attributes:
        levels: the arguments of severities 1..5 (each merged with the shared ones when applied).
    """

    stochastic = True
    default_levels = ()

    def __init__(self, name: str, entry: Mapping[str, Any], *, where: str) -> None:
        if not isinstance(entry, Mapping):
            raise SegstudyError(f"{where}: expected a mapping with '{TARGET}', shared arguments and '{SEVERITIES}'")
        if not NAME.fullmatch(name):
            raise SegstudyError(f"{where}: the name must be lower-case letters, digits and '_', starting with a letter")
        self.name = name  # type: ignore[misc]
        self.where = where
        self.shared = {k: v for k, v in entry.items() if k != SEVERITIES}
        self.levels = self._severities(entry.get(SEVERITIES))  # type: ignore[assignment]
        varying = sorted({k for level in self.levels for k in level})
        self.parameter = f"{entry.get(TARGET)}: {', '.join(varying)}"  # type: ignore[misc]
        self._configs = [{**self.shared, **level} for level in self.levels]
        self._target: Any = None
        for severity, (config, level) in enumerate(zip(self._configs, self.levels, strict=True), start=1):
            keys = {k: f"{where}.{SEVERITIES}.{severity}.{k}" for k in level}
            self._target = check_component(config, where=where, supplied=SUPPLIED, keys=keys)
        self._transforms: dict[int, Any] = {}

    def __repr__(self) -> str:
        return f"TargetPerturbation({self.name!r}, {self.shared.get(TARGET)!r})"

    def _severities(self, raw: Any) -> tuple[dict[str, Any], ...]:
        where = f"{self.where}.{SEVERITIES}"
        expected = list(range(1, N_SEVERITIES + 1))
        if isinstance(raw, Mapping):  # a spec read back from JSON has its keys as text
            raw = {int(k) if isinstance(k, str) and k.isdigit() else k: v for k, v in raw.items()}
        if not isinstance(raw, Mapping) or sorted(raw, key=str) != expected:
            given = sorted(raw) if isinstance(raw, Mapping) else raw
            raise SegstudyError(
                f"{where}: needs the arguments of each severity {expected[0]}-{expected[-1]} as a mapping "
                f"{{1: {{arg: value}}, ..., 5: {{...}}}}; got {given!r}"
            )
        levels = []
        for severity in expected:
            level = raw[severity]
            if not isinstance(level, Mapping) or not level:
                raise SegstudyError(f"{where}.{severity}: expected the arguments that change with severity, got {level!r}")
            clash = sorted(set(level) & set(self.shared))
            if clash:
                raise SegstudyError(f"{where}.{severity}.{clash[0]}: also given for every severity; give it in one place")
            levels.append(dict(level))
        if all(json.dumps(level, sort_keys=True, default=str) == json.dumps(levels[0], sort_keys=True, default=str)
               for level in levels):
            raise SegstudyError(f"{where}: every severity has the same arguments; give each its own strength")
        return tuple(levels)

    def transform(self, severity: int) -> Any:
        """The instantiated transform (or partial of a callable) of a severity 1-5, made once."""
        if severity not in self._transforms:
            config = dict(self._configs[severity - 1])
            if _monai_random(self._target) and _takes(self._target, "prob") and "prob" not in config:
                config["prob"] = 1.0  # MONAI's random transforms default to prob 0.1
            where = f"{self.where}.{SEVERITIES}.{severity}"
            self._transforms[severity] = instantiate(config, where=where, defer_functions=True)
        return self._transforms[severity]

    def _perturb(self, image: np.ndarray, *, value: Any, seed: int, mask: np.ndarray | None) -> Result:
        severity = self.levels.index(value) + 1
        transform = self.transform(severity)
        where = f"{self.where}.{SEVERITIES}.{severity}"
        try:
            out, drawn = self._run(transform, image, seed=seed)
        except SegstudyError:
            raise
        except Exception as exc:  # noqa: BLE001 - the user's transform may raise anything
            raise SegstudyError(f"{where}: {self.shared[TARGET]} failed on an image of shape {list(image.shape)}: "
                                f"{type(exc).__name__}: {first_line(exc, limit=300)}") from None
        if out.shape != image.shape:
            raise SegstudyError(
                f"{where}: {self.shared[TARGET]} turned an image of shape {list(image.shape)} into {list(out.shape)}; "
                "accepted: the same shape"
            )
        return out, {**value, **drawn}

    def _run(self, transform: Any, image: np.ndarray, *, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
        from monai.transforms import Randomizable, Transform

        if _is_torchio(transform):
            return run_torchio(transform, image, seed=seed)
        if isinstance(transform, Transform | Randomizable):
            return run_monai(transform, image, seed=seed if isinstance(transform, Randomizable) else None), {}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            extra = {"rng": np.random.default_rng(seed)} if _takes(transform, "rng") else {}
            out = transform(image.copy(), **extra)
        if isinstance(out, torch.Tensor):
            out = out.detach().cpu().numpy()
        return np.asarray(out, dtype=np.float32), {}


def describe_entry(name: str, entry: Mapping[str, Any]) -> dict[str, Any]:
    """A spec entry as a row of `study.perturbations.describe`, read from the spec alone (the
    report may be built where the target does not import): its levels are each severity's
    arguments as text, e.g. 'intensity=[0.4, 0.4]'."""
    raw = entry.get(SEVERITIES) if isinstance(entry, Mapping) else None
    levels = [raw[k] for k in sorted(raw, key=lambda k: int(k))] if isinstance(raw, Mapping) else []
    varying = sorted({str(k) for level in levels if isinstance(level, Mapping) for k in level})
    return {
        "name": name,
        "parameter": f"{entry.get(TARGET) if isinstance(entry, Mapping) else '?'}: {', '.join(varying)}",
        "levels": [", ".join(f"{k}={v}" for k, v in level.items()) if isinstance(level, Mapping) else str(level)
                   for level in levels],
        "stochastic": True,
        "needs_mask": False,
    }


def _is_torchio(transform: Any) -> bool:
    module = type(transform).__module__
    return module == "torchio" or module.startswith("torchio.")


def _monai_random(target: Any) -> bool:
    from monai.transforms import RandomizableTransform

    return inspect.isclass(target) and issubclass(target, RandomizableTransform)


def _takes(target: Any, argument: str) -> bool:
    """True if a class's constructor or a callable accepts `argument` by name."""
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False
    return argument in params


__all__ = ["SEVERITIES", "TargetPerturbation", "describe_entry"]
