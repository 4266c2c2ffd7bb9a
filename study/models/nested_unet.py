"""The dense nested skip type: UNet++'s skips on the U-Net family's own encoder and decoder.

Z. Zhou, M. M. Rahman Siddiquee, N. Tajbakhsh, J. Liang, "UNet++: A Nested U-Net Architecture for
Medical Image Segmentation", DLMIA 2018 (https://arxiv.org/abs/1807.10165).

The skip-connection study compares skip types on one network: none (``noskip_unet``), plain
(``unet``), attention-gated (``attention_unet``) and dense nested (``nested_unet``, this). Here
the encoder, the bottom and the decoder's up layers are built by :class:`SkipUNet`'s own layer
factories from MONAI blocks, with the same widths and strides, so only the skips differ. MONAI's
``BasicUNetPlusPlus`` (the ``unetpp`` family) is UNet++ on a different encoder (two convolutions
per level, max-pooling), about 15x the compute of this U-Net at 64^2 on a CPU core.

Nodes, with level ``i`` (0 = top) at its encoder resolution and ``c_i`` channels:

* ``X[i, 0]``: the encoder's output at level ``i`` (the plain skip);
* ``X[i, j]`` for ``j >= 1``: a convolution of ``cat(X[i, 0], ..., X[i, j-1], up(X[i+1, j-1]))``,
  ``up`` a transposed convolution from level ``i + 1`` (UNet++'s nested dense block);
* the decoder's up layer at level ``i`` takes ``cat(X[i, 0], ..., X[i, n-1-i], deeper)`` where the
  plain U-Net takes ``cat(X[i, 0], deeper)``.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from study.models.unet_family import Level, SkipUNet

__all__ = ["NestedUNet"]


class NestedUNet(SkipUNet):
    """:class:`SkipUNet` with UNet++'s dense nested skips at every level (all skips kept, no gates).

    Example:
        >>> net = NestedUNet(spatial_dims=2, in_channels=1, out_channels=1, channels=(4, 8, 16), strides=(2, 2))
        >>> net(torch.zeros(1, 1, 16, 16)).shape, [lv.up_in_channels for lv in net.levels]
        (torch.Size([1, 1, 16, 16]), [16, 24])
    """

    def _build(self, in_channels: int, out_channels: int) -> nn.Module:
        channels, strides, n = self.channels, self.strides, len(self.strides)
        model = nn.Module()
        model.down = nn.ModuleList(
            self._get_down_layer(in_channels if i == 0 else channels[i - 1], channels[i], strides[i], i == 0) for i in range(n)
        )
        model.bottom = self._get_bottom_layer(channels[n - 1], channels[-1])
        model.node_up, model.node = nn.ModuleDict(), nn.ModuleDict()
        ups = []
        for i in range(n):
            nested = n - 1 - i  # nodes X[i, 1..nested]
            for j in range(1, nested + 1):
                model.node_up[f"{i}_{j}"] = self._get_up_layer(channels[i + 1], channels[i], strides[i + 1], False)
                model.node[f"{i}_{j}"] = self._get_down_layer((j + 1) * channels[i], channels[i], 1, False)
            deeper = channels[-1] if i == n - 1 else channels[i]
            level = Level(
                index=i,
                channels=channels[i],
                stride=strides[i],
                skip=True,
                attention=False,
                deeper_channels=deeper,
                up_in_channels=(1 + nested) * channels[i] + deeper,
                up_out_channels=out_channels if i == 0 else channels[i - 1],
            )
            self._levels[i] = level
            ups.append(self._get_up_layer(level.up_in_channels, level.up_out_channels, strides[i], i == 0))
        model.up = nn.ModuleList(ups)
        return model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m, n = self.model, len(self.strides)
        nodes: dict[tuple[int, int], torch.Tensor] = {}
        for i in range(n):
            x = m.down[i](x)
            nodes[i, 0] = x
        for j in range(1, n):  # column by column: each node needs the column before, one level down
            for i in range(n - j):
                below = m.node_up[f"{i}_{j}"](nodes[i + 1, j - 1])
                nodes[i, j] = m.node[f"{i}_{j}"](torch.cat([*(nodes[i, k] for k in range(j)), below], dim=1))
        y = m.bottom(nodes[n - 1, 0])
        for i in reversed(range(n)):
            y = m.up[i](torch.cat([*(nodes[i, k] for k in range(n - i)), y], dim=1))
        return y
