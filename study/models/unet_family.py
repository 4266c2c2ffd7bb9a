"""The U-Net family: MONAI's UNet with a per-level skip mask and optional attention gates.

With every skip kept and no gates, :class:`SkipUNet` is module-for-module MONAI's
``monai.networks.nets.UNet`` (same construction order, same state-dict keys, same parameter
count), so the reference arm of an ablation is exactly the network the literature used. The two
toggles change only what they name:

* skip off at a level: no concatenation; the up layer sees only the deeper path's output
  (width ``c`` instead of ``2c``, or ``channels[-1]`` instead of ``c + channels[-1]`` at the bottom
  level), as in the No-Skip U-Net of the skip-vs-complexity study;
* attention on: each kept skip is multiplied by an attention gate (MONAI's AttentionUnet block)
  whose gating signal is the deeper path's output at the same resolution;
* nested on: UNet++'s dense nested skips on the same encoder and decoder
  (`study.models.nested_unet.NestedUNet`, a subclass; `study.models.unet_builder` builds either).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution, ResidualUnit
from monai.networks.layers import SkipConnection
from monai.networks.nets.attentionunet import AttentionBlock

from study.models.configs import UNetFamilyConfig
from study.models.sizes import downsampling_problem

__all__ = ["GatedSkipConnection", "Level", "SkipUNet", "unet_size_problem"]


@dataclass(frozen=True)
class Level:
    """What one encoder/decoder level was built with (index 0 = top, full resolution)."""

    index: int
    channels: int  # width of this level's down-layer output (the skip's width)
    stride: int
    skip: bool
    attention: bool  # True when the kept skip passes through a gate
    deeper_channels: int  # width of the deeper path's output at this level's resolution
    up_in_channels: int
    up_out_channels: int


class GatedSkipConnection(nn.Module):
    """Like MONAI's ``SkipConnection`` (cat mode), but the skip is gated by the deeper output.

    ``forward(x) = cat([gate(g=submodule(x), x=x), submodule(x)])``: the same channel order as
    ``SkipConnection``, so a gated level has the same up-layer width as an ungated one.
    """

    def __init__(self, submodule: nn.Module, gate: nn.Module) -> None:
        super().__init__()
        self.submodule = submodule
        self.gate = gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.submodule(x)
        return torch.cat([self.gate(g=y, x=x), y], dim=1)


class SkipUNet(nn.Module):
    """MONAI UNet with a per-level skip mask and optional attention gates on the kept skips.

    Args:
        spatial_dims: 2 or 3.
        in_channels, out_channels: image channels in, segmentation channels out.
        channels: widths, top level first (at least 2).
        strides: one per level, ``len(channels) - 1`` entries.
        skips: one flag per level, top first; ``None`` keeps all.
        attention: gate every kept skip with MONAI's ``AttentionBlock``.
        kernel_size, up_kernel_size, num_res_units, act, norm, dropout, bias, adn_ordering: as in
            ``monai.networks.nets.UNet``; but act/norm default to the reference study's ReLU and
            batch norm, not MONAI's PReLU and instance norm.

    Example:
        >>> net = SkipUNet(spatial_dims=2, in_channels=1, out_channels=1, channels=(4, 8, 16),
        ...                strides=(2, 2), skips=(True, False))
        >>> [lv.up_in_channels for lv in net.levels]
        [8, 16]
    """

    def __init__(
        self,
        *,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        channels: Sequence[int],
        strides: Sequence[int],
        skips: Sequence[bool] | None = None,
        attention: bool = False,
        kernel_size: int = 3,
        up_kernel_size: int = 3,
        num_res_units: int = 0,
        act: str | tuple = "relu",
        norm: str | tuple = "batch",
        dropout: float = 0.0,
        bias: bool = True,
        adn_ordering: str = "NDA",
    ) -> None:
        super().__init__()
        if len(channels) < 2:
            raise ValueError(f"channels needs at least 2 entries, got {list(channels)}")
        if len(strides) != len(channels) - 1:
            raise ValueError(f"strides needs {len(channels) - 1} entries, got {list(strides)}")
        skips = (True,) * len(strides) if skips is None else tuple(bool(s) for s in skips)
        if len(skips) != len(strides):
            raise ValueError(f"skips needs {len(strides)} entries (one per level), got {list(skips)}")
        self.dimensions = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.channels = tuple(channels)
        self.strides = tuple(strides)
        self.skips = skips
        self.attention = attention
        self.kernel_size = kernel_size
        self.up_kernel_size = up_kernel_size
        self.num_res_units = num_res_units
        self.act = act
        self.norm = norm
        self.dropout = dropout
        self.bias = bias
        self.adn_ordering = adn_ordering
        self._levels: dict[int, Level] = {}
        self.model = self._build(in_channels, out_channels)

    def _build(self, in_channels: int, out_channels: int) -> nn.Module:
        """The network from the top level down (MONAI UNet's recursive order); subclasses change the skips."""
        return self._create_block(in_channels, out_channels, 0)

    @property
    def levels(self) -> list[Level]:
        """Per-level build record, top (full resolution) first."""
        return [self._levels[i] for i in sorted(self._levels)]

    def _create_block(self, inc: int, outc: int, index: int) -> nn.Module:
        """Build level ``index`` and, recursively, everything below it (MONAI UNet's order)."""
        c, s, is_top = self.channels[index], self.strides[index], index == 0
        subblock: nn.Module
        if index < len(self.strides) - 1:
            subblock = self._create_block(c, c, index + 1)
            deeper = c
        else:  # the next layer is the bottom: it keeps the resolution and widens to channels[-1]
            subblock = self._get_bottom_layer(c, self.channels[-1])
            deeper = self.channels[-1]
        skip = self.skips[index]
        level = Level(
            index=index,
            channels=c,
            stride=s,
            skip=skip,
            attention=skip and self.attention,
            deeper_channels=deeper,
            up_in_channels=c + deeper if skip else deeper,
            up_out_channels=outc,
        )
        self._levels[index] = level
        down = self._get_down_layer(inc, c, s, is_top)
        up = self._get_up_layer(level.up_in_channels, outc, s, is_top)
        return self._get_connection_block(down, up, subblock, level=level)

    def _get_connection_block(
        self, down_path: nn.Module, up_path: nn.Module, subblock: nn.Module, *, level: Level
    ) -> nn.Module:
        """``down -> [skip around subblock] -> up``; the skip is plain, gated or absent."""
        if not level.skip:
            return nn.Sequential(down_path, subblock, up_path)
        if level.attention:
            return nn.Sequential(down_path, GatedSkipConnection(subblock, self._get_attention_gate(level)), up_path)
        return nn.Sequential(down_path, SkipConnection(subblock), up_path)

    def _get_attention_gate(self, level: Level) -> nn.Module:
        # Intermediate width c // 2 as in MONAI's AttentionLayer.
        return AttentionBlock(
            spatial_dims=self.dimensions,
            f_int=max(level.channels // 2, 1),
            f_g=level.deeper_channels,
            f_l=level.channels,
        )

    def _get_down_layer(self, in_channels: int, out_channels: int, strides: int, is_top: bool) -> nn.Module:
        if self.num_res_units > 0:
            return ResidualUnit(
                self.dimensions,
                in_channels,
                out_channels,
                strides=strides,
                kernel_size=self.kernel_size,
                subunits=self.num_res_units,
                act=self.act,
                norm=self.norm,
                dropout=self.dropout,
                bias=self.bias,
                adn_ordering=self.adn_ordering,
            )
        return Convolution(
            self.dimensions,
            in_channels,
            out_channels,
            strides=strides,
            kernel_size=self.kernel_size,
            act=self.act,
            norm=self.norm,
            dropout=self.dropout,
            bias=self.bias,
            adn_ordering=self.adn_ordering,
        )

    def _get_bottom_layer(self, in_channels: int, out_channels: int) -> nn.Module:
        return self._get_down_layer(in_channels, out_channels, 1, False)

    def _get_up_layer(self, in_channels: int, out_channels: int, strides: int, is_top: bool) -> nn.Module:
        """Transposed conv (plain conv output on the top level when there are no residual units)."""
        conv: nn.Module = Convolution(
            self.dimensions,
            in_channels,
            out_channels,
            strides=strides,
            kernel_size=self.up_kernel_size,
            act=self.act,
            norm=self.norm,
            dropout=self.dropout,
            bias=self.bias,
            conv_only=is_top and self.num_res_units == 0,
            is_transposed=True,
            adn_ordering=self.adn_ordering,
        )
        if self.num_res_units > 0:
            ru = ResidualUnit(
                self.dimensions,
                out_channels,
                out_channels,
                strides=1,
                kernel_size=self.kernel_size,
                subunits=1,
                act=self.act,
                norm=self.norm,
                dropout=self.dropout,
                bias=self.bias,
                last_conv_only=is_top,
                adn_ordering=self.adn_ordering,
            )
            conv = nn.Sequential(conv, ru)
        return conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def unet_size_problem(cfg: UNetFamilyConfig, img_size: Sequence[int]) -> str | None:
    """None when every dimension survives all down-samplings evenly, else a short reason.

    An odd size halfway down would make the up path's output one pixel off the skip it joins;
    instance norm also needs more than one voxel at the bottom (`study/models/sizes.py`).
    """
    factor = math.prod(cfg.strides)
    why = f"the product of strides {list(cfg.strides)}"
    return downsampling_problem("this U-Net", img_size, factor, why=why, norm=cfg.norm)
