"""A network of your own: any torch.nn.Module, named in the spec by its import path (my_nets.TinyUNet).

segstudy builds it with MONAI's ConfigParser from the spec's `architectures:` entry, passing the
study's spatial_dims, in_channels and out_channels where the entry says "@spatial_dims" and so on;
`segstudy validate` builds it at the study's input size and trains one step before anything runs.
It must return one tensor (batch, out_channels, *the input's spatial size): the logits.
"""

from __future__ import annotations

import torch
import torch.nn as nn


def _block(conv: type[nn.Module], norm: type[nn.Module], c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(conv(c_in, c_out, 3, padding=1), norm(c_out), nn.ReLU(inplace=True),
                         conv(c_out, c_out, 3, padding=1), norm(c_out), nn.ReLU(inplace=True))


class TinyUNet(nn.Module):
    """A two-level U-Net: `width` channels at full resolution, twice that below.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        out_channels: output channels (segstudy trains one: the foreground logit).
        width: channels of the first level (an ablation factor in spec.yaml: tiny vs tiny_wide).
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, width: int = 8) -> None:
        super().__init__()
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        norm = nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d
        pool = nn.MaxPool2d if spatial_dims == 2 else nn.MaxPool3d
        up = nn.ConvTranspose2d if spatial_dims == 2 else nn.ConvTranspose3d
        self.down = _block(conv, norm, in_channels, width)
        self.pool = pool(2)
        self.bottom = _block(conv, norm, width, 2 * width)
        self.up = up(2 * width, width, 2, stride=2)
        self.decode = _block(conv, norm, 2 * width, width)
        self.head = conv(width, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.down(x)
        deep = self.up(self.bottom(self.pool(skip)))
        return self.head(self.decode(torch.cat([skip, deep], dim=1)))
