"""The architecture registry: one `Family` entry per architecture family, preset names, spec
overrides, and one builder for every config.

Adding a family is one config class (a `kind` literal) in `configs.py`, one builder module with
``build(cfg, *, spatial_dims, in_channels, out_channels, img_size)`` and
``size_problem(cfg, img_size)``, and one entry in `FAMILIES` naming them and the family's presets;
everything else (the config union, look-ups by kind, size checks, building, parameter counts)
reads `FAMILIES`. Families: the U-Net family (``unet``, ``noskip_unet``, ``attention_unet``,
``nested_unet``), UNETR, SegResNet, SwinUNETR, DynUNet and U-Net++ (``unetpp``), all built by MONAI
or from MONAI's blocks.

Skip types on one network. The skip-connection study compares none (``noskip_unet``), plain
(``unet``), attention-gated (``attention_unet``) and dense nested (``nested_unet``: UNet++'s skips on
this same U-Net) skips: four presets of one family, so only the skips differ. MONAI's U-Net++
(``unetpp``) is UNet++ on its own encoder (two convolutions per level), a family of its own; compared
with the U-Net family, its ``unetpp`` arms must have the U-Net family's encoder widths. Widths are a family setting: the
spec gives them once per family under ``model:`` (``model.unet.channels`` and
``model.unetpp.channels``, both defaulting to 16..256; a custom ``unetpp`` arm may set its own),
and a family's ``matches`` entry makes `validate` refuse a study whose ``unetpp`` arms differ from
its ``unet`` family, in one line that names both keys and the value to set. We check instead of copying the widths across silently:
the spec then says what every arm is, and a width the user typed is never overridden.

A spec refers to architectures by name. A name is a preset below, or a custom entry of the spec's
``architectures:`` section (a preset ``base`` plus changed fields). The spec's ``model:`` section,
keyed by family kind, changes every architecture of that family at once (for example smaller
channels for a smoke study), so arms of one family differ only in their named toggles.

Example:
    >>> cfg = resolve_architecture(
    ...     "top_skip_only",
    ...     family_overrides={"unet": {"channels": [8, 16, 32], "strides": [2, 2]}},
    ...     custom={"top_skip_only": {"base": "unet", "skips": [True, False]}},
    ... )
    >>> cfg.channels, cfg.skip_mask
    ((8, 16, 32), (True, False))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Annotated, Any, Union

import torch
import torch.nn as nn
from pydantic import Field, ValidationError

from study.errors import SegstudyError, unknown_name
from study.models.configs import (
    DynUNetConfig,
    SegResNetConfig,
    SwinUNETRConfig,
    UNetFamilyConfig,
    UNetPlusPlusConfig,
    UNETRConfig,
)
from study.models.dynunet import build_dynunet, dynunet_size_problem
from study.models.segresnet import build_segresnet, segresnet_size_problem
from study.models.swinunetr import build_swinunetr, swinunetr_size_problem
from study.models.target import TargetConfig, build_target, custom_target, target_size_problem
from study.models.unet_builder import build_unet
from study.models.unet_family import unet_size_problem
from study.models.unetpp import build_unetpp, unet_width_problem, unetpp_size_problem
from study.models.unetr import build_unetr, unetr_size_problem
from study.strict import StrictModel

__all__ = [
    "CONFIG_CLASSES",
    "FAMILIES",
    "PRESETS",
    "ArchConfig",
    "Family",
    "architecture_names",
    "build_network",
    "check_input_size",
    "get_family",
    "memory_format",
    "mismatched_arm",
    "parameter_count",
    "resolve_architecture",
]

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True)
class Family:
    """A registered architecture family.

    Attributes:
        config: the frozen config class; its ``kind`` literal is the family's key in `FAMILIES`
            (and in a spec's ``model:`` section and a package's architecture record).
        build: ``build(cfg, *, spatial_dims, in_channels, out_channels, img_size) -> nn.Module``.
        size_problem: ``size_problem(cfg, img_size) -> None`` when the network takes that
            patch/image size, else a short reason naming the bad size.
        presets: the architecture names this family offers a spec, each a config of ``config``.
        matches: ``{other kind: check}`` for families this one must agree with when a study has
            arms of both: ``check(cfg, other_cfg, *, source) -> None or reason``, where
            ``other_cfg`` is the other family's config under the spec's ``model:`` section and
            ``source(field)`` the spec key an arm's field is set under.
        channels_last: train and test in channels-last memory on a CPU, where the family's
            convolutions run faster so (the U-Net family and U-Net++: 0.70-0.92 x the time per
            training step at 64^2, benchmarks/memory_format.py); off where it is slower (DynUNet) or no faster, and
            for a custom ``_target_`` network, whose code may reshape activations with ``view``.
    """

    config: type[StrictModel]
    build: Callable[..., nn.Module]
    size_problem: Callable[[Any, Sequence[int]], str | None]
    presets: Mapping[str, StrictModel]
    matches: Mapping[str, Callable[..., str | None]] = dataclasses.field(default_factory=dict)
    channels_last: bool = False


FAMILIES: Mapping[str, Family] = MappingProxyType(
    {
        "unet": Family(
            config=UNetFamilyConfig,
            build=build_unet,
            size_problem=unet_size_problem,
            channels_last=True,
            presets={
                "unet": UNetFamilyConfig(),
                "noskip_unet": UNetFamilyConfig(skips="none"),
                "attention_unet": UNetFamilyConfig(attention=True),
                "nested_unet": UNetFamilyConfig(nested=True),
            },
        ),
        "unetr": Family(
            config=UNETRConfig,
            build=build_unetr,
            size_problem=unetr_size_problem,
            presets={"unetr": UNETRConfig()},
        ),
        "segresnet": Family(
            config=SegResNetConfig,
            build=build_segresnet,
            size_problem=segresnet_size_problem,
            presets={"segresnet": SegResNetConfig()},
        ),
        "swinunetr": Family(
            config=SwinUNETRConfig,
            build=build_swinunetr,
            size_problem=swinunetr_size_problem,
            presets={"swinunetr": SwinUNETRConfig()},
        ),
        "dynunet": Family(
            config=DynUNetConfig,
            build=build_dynunet,
            size_problem=dynunet_size_problem,
            presets={"dynunet": DynUNetConfig()},
        ),
        "unetpp": Family(
            config=UNetPlusPlusConfig,
            build=build_unetpp,
            size_problem=unetpp_size_problem,
            channels_last=True,
            presets={"unetpp": UNetPlusPlusConfig()},
            matches={"unet": unet_width_problem},
        ),
        # A network from outside segstudy, by import path (study/models/target.py): no presets, an
        # arm is a spec's architectures entry with a `_target_`.
        "target": Family(config=TargetConfig, build=build_target, size_problem=target_size_problem, presets={}),
    }
)
for _kind, _family in FAMILIES.items():  # a mismatch would route configs to the wrong builder
    assert _family.config.model_fields["kind"].default == _kind, _kind

# Derived from FAMILIES; nothing else lists the families.
CONFIG_CLASSES: Mapping[str, type[StrictModel]] = MappingProxyType({k: f.config for k, f in FAMILIES.items()})
ArchConfig = Annotated[Union[tuple(CONFIG_CLASSES.values())], Field(discriminator="kind")]  # type: ignore[valid-type]
PRESETS: Mapping[str, Any] = MappingProxyType({n: c for f in FAMILIES.values() for n, c in f.presets.items()})


def get_family(kind: str, *, where: str = "model") -> Family:
    """The registry entry for a family `kind`; an unknown kind raises a did-you-mean `SegstudyError`."""
    try:
        return FAMILIES[kind]
    except KeyError:
        raise unknown_name("model family", kind, FAMILIES, where=where) from None



def architecture_names(*, custom: Mapping[str, Mapping[str, Any]] = _EMPTY) -> tuple[str, ...]:
    """Every name a spec may use: the presets, then the spec's custom architectures."""
    return (*PRESETS, *(name for name in custom if name not in PRESETS))


def resolve_architecture(
    name: str,
    *,
    family_overrides: Mapping[str, Mapping[str, Any]] = _EMPTY,
    custom: Mapping[str, Mapping[str, Any]] = _EMPTY,
    where: str = "",
    levels: Mapping[str, Any] = _EMPTY,
) -> ArchConfig:
    """Turn an architecture name into its validated config.

    The result is the preset (or a custom entry's ``base`` preset), then the ``model:`` overrides
    for its kind, then the custom entry's own fields, later ones winning. A custom entry with a
    ``_target_`` (or whose ``base`` is one) is a network from outside segstudy
    (`study.models.target.TargetConfig`): its import is checked by `check_target`, not here.

    Args:
        name: a preset name or a key of ``custom``.
        family_overrides: the spec's ``model:`` section, ``{kind: {field: value}}``.
        custom: the spec's ``architectures:`` section, ``{name: {"base": preset, field: value}}``
            or ``{name: {"_target_": "module.Name", argument: value}}``.
        where: prefix for an unknown-name error (e.g. ``"smoke.yaml: factors.architecture"``).
        levels: a cell's factor values; a ``_target_`` arm keeps those it refers to (``@width``).

    Raises:
        SegstudyError: unknown name, base, family or field, a custom name that shadows a preset,
            or a field value the config rejects; one line naming the architecture and field.
    """
    for kind in family_overrides:
        get_family(kind)
        if not FAMILIES[kind].presets:  # `target`: each such arm carries its own arguments
            raise SegstudyError(f"model.{kind}: a _target_ arm takes its arguments in its own architectures entry")
    for custom_name in custom:
        if custom_name in PRESETS:
            raise SegstudyError(
                f"architectures.{custom_name}: the name is taken by a preset; choose another "
                f"(presets: {', '.join(PRESETS)})"
            )
    network = custom_target(name, custom)
    if network is not None:
        return TargetConfig(name=name, network=network).at(levels)
    if name in PRESETS:
        base, fields = name, {}
    elif name in custom:
        base, fields = _split_custom(name, custom[name], custom)
    else:
        raise unknown_name("architecture", name, architecture_names(custom=custom), where=where)

    preset = PRESETS[base]
    cls = type(preset)
    overrides = dict(family_overrides.get(preset.kind, {}))
    # Remember where each changed field came from, so an error points at the spec line to fix.
    sources = {key: f"model.{preset.kind}" for key in overrides}
    sources |= {key: f"architectures.{name}" for key in fields}
    accepted = [f for f in cls.model_fields if f != "kind"]
    for key, source in sources.items():
        if key not in accepted:
            raise unknown_name(f"{preset.kind} field", key, accepted, where=f"{source} (architecture '{name}')")
    try:
        return cls.model_validate(preset.model_dump() | overrides | fields)
    except ValidationError as exc:
        raise _field_error(exc, name=name, base=base, sources=sources) from None


def _split_custom(name: str, entry: Any, custom: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """A custom entry -> (base preset name, changed fields)."""
    where = f"architectures.{name}"
    if not isinstance(entry, Mapping):
        raise SegstudyError(f"{where}: expected a mapping with 'base' and fields to change, got {entry!r}")
    fields = dict(entry)
    if "base" not in fields:
        raise SegstudyError(
            f"{where}: 'base' (one of {', '.join(PRESETS)}) or '_target_' (an import path, e.g. my_nets.TinyUNet) is required"
        )
    base = fields.pop("base")
    if base not in PRESETS:
        targets = [n for n in custom if custom_target(n, custom) is not None]
        raise unknown_name("base architecture", str(base), [*PRESETS, *targets], where=f"{where}.base")
    return base, fields


def _field_error(exc: ValidationError, *, name: str, base: str, sources: Mapping[str, str]) -> SegstudyError:
    """Pydantic's first complaint as one line: architecture, field, where it was set, why."""
    errors = exc.errors()
    # A union field (skips) yields one error per member; the one that reached an element of a
    # list says most ("skips[1]: not a boolean"), so prefer it.
    err = max(errors, key=lambda e: any(isinstance(p, int) for p in e["loc"]))
    msg = str(err["msg"]).removeprefix("Value error, ")
    loc = err["loc"]
    if loc:  # field-level error: name the field (and element)
        field = str(loc[0]) + "".join(f"[{p}]" for p in loc[1:] if isinstance(p, int))
        if err["type"] != "value_error":  # our own messages already quote the value
            msg = f"{msg} (got {err['input']!r})"
    else:  # model-level check: our messages start with the field they are about
        field = next((f for f in sources if msg.startswith(f)), msg.split(" ", 1)[0])
    source = sources.get(field.split("[", 1)[0], f"preset '{base}'")
    others = len({e["loc"][:1] for e in errors}) - 1
    more = f" (and {others} more)" if others > 0 else ""
    return SegstudyError(f"architecture '{name}': {field} (set in {source}): {msg}{more}")


def check_input_size(cfg: ArchConfig, img_size: Sequence[int]) -> str | None:
    """None when the architecture accepts this patch/image size, else a short reason.

    Example:
        >>> check_input_size(UNETRConfig(), [40, 48])
        'UNETR needs every patch/image dimension to be a multiple of 16, got 40'
    """
    return get_family(cfg.kind).size_problem(cfg, img_size)


def build_network(
    cfg: ArchConfig, *, spatial_dims: int, in_channels: int, out_channels: int, img_size: Sequence[int]
) -> nn.Module:
    """Build the network a config describes, for patches/images of ``img_size``.

    Raises:
        SegstudyError: ``img_size`` does not suit the architecture (see :func:`check_input_size`).
        ValueError: ``spatial_dims`` is not 2 or 3, or ``img_size`` has the wrong length.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    if len(img_size) != spatial_dims:
        raise ValueError(f"img_size needs {spatial_dims} entries, got {list(img_size)}")
    problem = check_input_size(cfg, img_size)
    if problem:
        raise SegstudyError(f"architecture kind '{cfg.kind}': {problem}")
    family = get_family(cfg.kind)
    return family.build(
        cfg, spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, img_size=img_size
    )


def memory_format(cfg: ArchConfig, *, spatial_dims: int, device: torch.device) -> torch.memory_format:
    """The memory format a network of `cfg` trains in on `device` (`Family.channels_last`)."""
    if device.type != "cpu" or not get_family(cfg.kind).channels_last:
        return torch.contiguous_format
    return torch.channels_last if spatial_dims == 2 else torch.channels_last_3d


def mismatched_arm(
    names: Sequence[str],
    *,
    family_overrides: Mapping[str, Mapping[str, Any]] = _EMPTY,
    custom: Mapping[str, Mapping[str, Any]] = _EMPTY,
) -> tuple[int, str] | None:
    """The first arm that disagrees with another family of the same study (`Family.matches`).

    The other family's config is its first preset under the spec's ``model:`` section: what the
    family is set to, not a custom variant of it.

    Returns:
        None, or (index of the arm in ``names``, one-line reason naming the keys to change).

    Example:
        >>> mismatched_arm(["unet", "unetpp"], family_overrides={"unet": {"channels": [8, 16, 32, 64, 128]}})
        (1, 'model.unetpp.channels [16, 32, 64, 128, 256] differs from model.unet.channels [8, 16, 32, 64, 128], so more than the skips would differ; set model.unetpp.channels: [8, 16, 32, 64, 128]')
    """
    configs = [resolve_architecture(n, family_overrides=family_overrides, custom=custom) for n in names]
    kinds = {cfg.kind for cfg in configs}
    for i, (name, cfg) in enumerate(zip(names, configs)):
        for other, check in FAMILIES[cfg.kind].matches.items():
            if other not in kinds:
                continue
            family_cfg = resolve_architecture(next(iter(FAMILIES[other].presets)), family_overrides=family_overrides)
            problem = check(cfg, family_cfg, source=_spec_key(name, cfg.kind, custom))
            if problem:
                return i, problem
    return None


def _spec_key(name: str, kind: str, custom: Mapping[str, Any]) -> Callable[[str], str]:
    """field -> the spec key that sets it for this arm: its own custom entry, else ``model.<kind>``."""
    own = custom.get(name)
    fields = own if isinstance(own, Mapping) else {}
    return lambda field: f"architectures.{name}.{field}" if field in fields else f"model.{kind}.{field}"


def parameter_count(
    cfg: ArchConfig, *, spatial_dims: int, in_channels: int, out_channels: int, img_size: Sequence[int]
) -> int:
    """How many parameters the network a config describes holds (the report's design table).

    Built for real on the CPU (MONAI's transformers compute buffers at construction, so a meta
    device cannot stand in); counts every parameter once, including heads MONAI builds but a
    trial does not use (U-Net++'s three intermediate 1x1 output convolutions).

    Raises:
        SegstudyError: ``img_size`` does not suit the architecture (see :func:`check_input_size`).

    Example:
        >>> parameter_count(UNETRConfig(hidden_size=96, mlp_dim=192, num_heads=4), spatial_dims=2,
        ...                 in_channels=1, out_channels=1, img_size=[32, 32]) > 0
        True
    """
    net = build_network(
        cfg, spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, img_size=img_size
    )
    return sum(p.numel() for p in net.parameters())
