"""A network from outside segstudy, named by import path as a MONAI bundle component.

A spec's ``architectures:`` entry with a ``_target_`` is a network of the researcher's own (or any
importable ``torch.nn.Module``, e.g. one of MONAI's), with its arguments beside it:

    architectures:
      tiny:
        _target_: my_nets.TinyUNet
        spatial_dims: "@spatial_dims"     # the study supplies these four
        in_channels: "@in_channels"
        out_channels: "@out_channels"
        width: "@width"                   # a factor of the spec: one cell per level
      tiny_deep: {base: tiny, depth: 3}   # an arm that differs in one argument

`monai.bundle.ConfigParser` instantiates it (`study.targets.instantiate`) with the study's values as
the other entries of its config, so ``@spatial_dims`` and friends resolve the MONAI way. A factor
an arm refers to (``@width``) is an ablation factor over that argument; `validate` requires every arm
of the study to take it (`target_factors`). `validate` imports the module and checks the arguments
(`check_target`), then builds the network at the study's input size and trains one step on the
study's data (`study/run/driver/preflight.py`, with `output_problem`).

Example:
    >>> cfg = TargetConfig(name="basic", network={"_target_": "monai.networks.nets.BasicUNet",
    ...     "spatial_dims": "@spatial_dims", "in_channels": "@in_channels", "out_channels": "@out_channels",
    ...     "features": [4, 4, 8, 16, 32, 4]})
    >>> net = build_target(cfg, spatial_dims=2, in_channels=1, out_channels=1, img_size=[32, 32])
    >>> type(net).__name__
    'BasicUNet'
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any, Literal, Union

import torch.nn as nn
from pydantic import Field

from study.errors import SegstudyError
from study.strict import StrictModel
from study.targets import TARGET, check_component, instantiate, is_component, references_in

# The values every network config may refer to, supplied by the study for each trial.
NETWORK_REFERENCES = ("spatial_dims", "in_channels", "out_channels", "img_size")

Level = Union[bool, int, float, str]

__all__ = [
    "NETWORK_REFERENCES",
    "TargetConfig",
    "build_target",
    "check_target",
    "custom_target",
    "output_problem",
    "target_factors",
    "target_size_problem",
]


class TargetConfig(StrictModel):
    """An arm built from an import path: the spec's bundle component, and the factor levels it refers to.

    Attributes:
        name: the arm's key under ``architectures:`` (errors name it).
        network: ``{"_target_": "module.Name", argument: value or "@reference", ...}``.
        levels: the levels of the factors the network refers to, for one cell (``{"width": 16}``);
            empty until a cell is known (`resolve_architecture(..., levels=cell)`).
    """

    kind: Literal["target"] = "target"
    name: str
    network: dict[str, Any]
    levels: dict[str, Level] = Field(default_factory=dict)

    @property
    def target(self) -> str:
        """The import path, e.g. ``my_nets.TinyUNet``."""
        return str(self.network[TARGET])

    @property
    def factors(self) -> list[str]:
        """The spec factors the network refers to, in order of first use."""
        return list(dict.fromkeys(r for r in references_in(self.network) if r not in NETWORK_REFERENCES))

    def at(self, levels: Mapping[str, Any]) -> TargetConfig:
        """This arm at one cell: the levels of the factors it refers to, taken from `levels`."""
        return self.model_copy(update={"levels": {f: levels[f] for f in self.factors if f in levels}})


def custom_target(name: str, custom: Mapping[str, Any]) -> dict[str, Any] | None:
    """The bundle component of a custom arm: its own ``_target_`` entry, or an entry whose ``base``
    is a ``_target_`` arm with some arguments changed; None for an arm of a registered family.

    Raises:
        SegstudyError: an entry with both ``_target_`` and ``base``, or bases that loop.
    """
    seen: list[str] = []
    changes: dict[str, Any] = {}
    while name in custom and name not in seen:
        entry = custom[name]
        if not isinstance(entry, Mapping):
            return None
        if is_component(entry):
            if "base" in entry:
                raise SegstudyError(f"architectures.{name}: give either '{TARGET}' or 'base', not both")
            return {**entry, **changes}
        seen.append(name)
        changes = {k: v for k, v in entry.items() if k != "base"} | changes
        name = str(entry.get("base"))
    if name in seen:
        raise SegstudyError(f"architectures.{seen[0]}: the bases loop ({' -> '.join([*seen, name])})")
    return None


def check_target(cfg: TargetConfig, *, factors: Collection[str]) -> None:
    """Import the target and check its arguments and references (no network is built).

    Raises:
        SegstudyError: ``architectures.<name>...: ...`` naming the key and what is accepted.
    """
    where = f"architectures.{cfg.name}"
    target = check_component(cfg.network, where=where, references=[*NETWORK_REFERENCES, *factors])
    if not callable(target):
        raise SegstudyError(f"{where}.{TARGET}: {cfg.target} is not a class or function that builds a torch.nn.Module")
    clash = sorted(set(factors) & set(NETWORK_REFERENCES))
    if clash:
        raise SegstudyError(f"factors.{clash[0]}: the name is taken by the value the study supplies as @{clash[0]}; rename the factor")


def target_factors(arms: Sequence[tuple[str, Any]], factors: Collection[str]) -> set[str]:
    """The factors of a spec that are arguments of ``_target_`` arms; each must be taken by every arm.

    Args:
        arms: (name, resolved config) of every arm of factors.architecture.
        factors: the spec's factor names.

    Raises:
        SegstudyError: a factor some target arm refers to that another arm does not take: their
            cells would differ in more than the named argument, or repeat one network.
    """
    used = {f for _, cfg in arms if isinstance(cfg, TargetConfig) for f in cfg.factors if f in factors}
    for factor in sorted(used):
        for name, cfg in arms:
            if not isinstance(cfg, TargetConfig) or factor not in cfg.factors:
                raise SegstudyError(
                    f"factors.{factor}: arm '{name}' does not take it; a factor over a network argument needs every "
                    f"arm of factors.architecture to refer to it (as '@{factor}'), or make it two arms that differ in it"
                )
    return used


def build_target(
    cfg: TargetConfig, *, spatial_dims: int, in_channels: int, out_channels: int, img_size: Sequence[int]
) -> nn.Module:
    """Instantiate the network with MONAI's ConfigParser, the study's values and the cell's levels
    as the references it may use.

    Raises:
        SegstudyError: the constructor failed, or what it returned is not a torch.nn.Module.
    """
    where = f"architectures.{cfg.name}"
    references = {
        "spatial_dims": spatial_dims, "in_channels": in_channels, "out_channels": out_channels,
        "img_size": [int(s) for s in img_size], **cfg.levels,
    }
    missing = [f for f in cfg.factors if f not in references]
    if missing:  # a bug in the caller: the cell's levels were not given
        raise ValueError(f"{where}: no level for the factor(s) {', '.join(missing)}")
    network = instantiate(cfg.network, where=where, references=references)
    if not isinstance(network, nn.Module):
        raise SegstudyError(
            f"{where}.{TARGET}: {cfg.target} returned a {type(network).__name__}; accepted: a torch.nn.Module"
        )
    return network


def target_size_problem(cfg: TargetConfig, img_size: Sequence[int]) -> str | None:
    """Always None: what sizes a network of the user's takes is known only by running it, which
    `validate` does (study/run/driver/preflight.py) at every input size of the study."""
    return None


def output_problem(network: nn.Module, output: Any, input_shape: Sequence[int], *, out_channels: int) -> str | None:
    """None when a network's output fits the study's loss and metrics, else a short reason.

    Accepted: one tensor of shape (batch, out_channels, *the input's spatial size): the logits a
    trial thresholds. A tuple (deep supervision), another channel count or a resized output is not.
    """
    import torch

    if not any(p.requires_grad for p in network.parameters()):
        return "it has no trainable parameters"
    expected = (int(input_shape[0]), out_channels, *map(int, input_shape[2:]))
    if not isinstance(output, torch.Tensor):
        return f"it returns a {type(output).__name__}; accepted: one tensor of shape {list(expected)}"
    if tuple(output.shape) != expected:
        return (
            f"output shape {list(output.shape)} for input {list(input_shape)}; accepted: {list(expected)} "
            "(batch, out_channels = @out_channels, the input's spatial size)"
        )
    return None

