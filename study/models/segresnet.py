"""SegResNet: a thin builder over ``monai.networks.nets.SegResNet``.

A. Myronenko, "3D MRI brain tumor segmentation using autoencoder regularization", BrainLes 2018
(https://arxiv.org/abs/1810.11654); MONAI's network without the VAE branch. Every encoder level
after the first halves the resolution with a stride-2 convolution, and the decoder adds the skip
back, so each dimension must be a multiple of ``2 ** (len(blocks_down) - 1)``.
"""

from __future__ import annotations

from collections.abc import Sequence

from monai.networks.nets import SegResNet

from study.models.configs import SegResNetConfig
from study.models.sizes import downsampling_problem

__all__ = ["build_segresnet", "segresnet_size_problem"]


def segresnet_size_problem(cfg: SegResNetConfig, img_size: Sequence[int]) -> str | None:
    """None when SegResNet can take this patch/image size, else a short reason naming the bad size."""
    halvings = len(cfg.blocks_down) - 1
    factor = 2**halvings
    why = f"it halves the resolution {halvings} times, one per blocks_down entry after the first"
    return downsampling_problem("SegResNet", img_size, factor, why=why, norm=cfg.norm)


def build_segresnet(
    cfg: SegResNetConfig, *, spatial_dims: int, in_channels: int, out_channels: int, img_size: Sequence[int] | None = None
) -> SegResNet:
    """Build MONAI's SegResNet; ``img_size`` is unused (fully convolutional, checked by the size rule)."""
    norm: str | tuple = ("group", {"num_groups": cfg.num_groups}) if cfg.norm == "group" else cfg.norm
    return SegResNet(
        spatial_dims=spatial_dims,
        init_filters=cfg.init_filters,
        in_channels=in_channels,
        out_channels=out_channels,
        dropout_prob=cfg.dropout or None,  # MONAI adds no dropout layer for None
        act=cfg.act,
        norm=norm,
        blocks_down=cfg.blocks_down,
        blocks_up=cfg.blocks_up,
        upsample_mode=cfg.upsample_mode,
    )
