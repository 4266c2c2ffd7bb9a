"""Architectures by name: presets, spec overrides, and the builder every trial uses.

Example:
    >>> from study.models import build_network, resolve_architecture
    >>> cfg = resolve_architecture("noskip_unet", family_overrides={"unet": {"channels": [4, 8], "strides": [2]}})
    >>> build_network(cfg, spatial_dims=2, in_channels=1, out_channels=1, img_size=[32, 32]).levels[0].up_in_channels
    8
"""

from __future__ import annotations

from study.models.configs import (
    ACTS,
    NORMS,
    DynUNetConfig,
    SegResNetConfig,
    SwinUNETRConfig,
    UNetFamilyConfig,
    UNetPlusPlusConfig,
    UNETRConfig,
)
from study.models.registry import (
    CONFIG_CLASSES,
    FAMILIES,
    PRESETS,
    ArchConfig,
    Family,
    get_family,
    architecture_names,
    build_network,
    memory_format,
    check_input_size,
    mismatched_arm,
    parameter_count,
    resolve_architecture,
)
from study.models.target import NETWORK_REFERENCES, TargetConfig, check_target, output_problem, target_factors
from study.models.unet_family import Level, SkipUNet
from study.models.unetpp import UNetPlusPlus

__all__ = [
    "ACTS",
    "CONFIG_CLASSES",
    "FAMILIES",
    "Family",
    "get_family",
    "NORMS",
    "PRESETS",
    "ArchConfig",
    "DynUNetConfig",
    "Level",
    "NETWORK_REFERENCES",
    "SegResNetConfig",
    "SkipUNet",
    "SwinUNETRConfig",
    "TargetConfig",
    "UNETRConfig",
    "UNetFamilyConfig",
    "UNetPlusPlus",
    "UNetPlusPlusConfig",
    "architecture_names",
    "build_network",
    "memory_format",
    "check_input_size",
    "check_target",
    "mismatched_arm",
    "output_problem",
    "parameter_count",
    "resolve_architecture",
    "target_factors",
]
