"""The U-Net family's builder: a config -> :class:`SkipUNet`, or with ``nested`` its subclass
:class:`NestedUNet`.

It lives apart from both networks so that imports run one way: this module imports both,
`nested_unet` imports `unet_family` (it subclasses SkipUNet), and `unet_family` imports neither.
"""

from __future__ import annotations

from collections.abc import Sequence

from study.models.configs import UNetFamilyConfig
from study.models.nested_unet import NestedUNet
from study.models.unet_family import SkipUNet

__all__ = ["build_unet"]


def build_unet(
    cfg: UNetFamilyConfig,
    *,
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    img_size: Sequence[int] | None = None,
) -> SkipUNet:
    """Build the :class:`SkipUNet` (or, with ``nested``, its :class:`NestedUNet`) a validated config describes.

    ``img_size`` is accepted so every family's builder has one signature; a U-Net is fully
    convolutional and is built the same for every size (sizes are checked by :func:`unet_size_problem`).
    """
    network = NestedUNet if cfg.nested else SkipUNet
    return network(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=cfg.channels,
        strides=cfg.strides,
        skips=cfg.skip_mask,
        attention=cfg.attention,
        kernel_size=cfg.kernel_size,
        up_kernel_size=cfg.up_kernel_size,
        num_res_units=cfg.num_res_units,
        act=cfg.act,
        norm=cfg.norm,
        dropout=cfg.dropout,
    )
