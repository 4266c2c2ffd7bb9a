"""U-Net++: MONAI's ``BasicUNetPlusPlus`` returning one tensor, and its pairing with the U-Net family.

Z. Zhou, M. M. Rahman Siddiquee, N. Tajbakhsh, J. Liang, "UNet++: A Nested U-Net Architecture for
Medical Image Segmentation", DLMIA 2018 (https://arxiv.org/abs/1807.10165).

MONAI's U-Net++ has its own encoder (two convolutions per level, max-pooling); the skip-type
comparison on one network uses the U-Net family's ``nested_unet`` (study/models/nested_unet.py),
about 1/15 of this one's compute at 64^2 on a CPU core. Compared with the U-Net family, its five
encoder widths must be the U-Net family's: :func:`unet_width_problem` makes `validate` refuse a study
whose ``unetpp`` arms and ``unet`` family differ.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from monai.networks.nets import BasicUNetPlusPlus

from study.models.configs import UNetFamilyConfig, UNetPlusPlusConfig
from study.models.sizes import downsampling_problem

__all__ = ["UNETPP_FACTOR", "UNetPlusPlus", "build_unetpp", "unet_width_problem", "unetpp_size_problem"]

UNETPP_FACTOR = 2**4  # four 2x max-poolings, fixed in MONAI's BasicUNetPlusPlus


class UNetPlusPlus(BasicUNetPlusPlus):
    """MONAI's BasicUNetPlusPlus without deep supervision, returning its one output as a tensor.

    MONAI returns a list (one output per nested decoder column with deep supervision, else just
    the last); a trial trains one output. Same modules and state-dict keys as MONAI's network.

    Example:
        >>> net = UNetPlusPlus(spatial_dims=2, in_channels=1, out_channels=1, features=(2, 2, 4, 4, 8, 2))
        >>> net(torch.zeros(1, 1, 32, 32)).shape
        torch.Size([1, 1, 32, 32])
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__(deep_supervision=False, **kwargs)  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x)[-1]


def unetpp_size_problem(cfg: UNetPlusPlusConfig, img_size: Sequence[int]) -> str | None:
    """None when U-Net++ can take this patch/image size, else a short reason naming the bad size.

    MONAI pads an odd edge by replication instead of refusing it; a multiple of 16 never needs it.
    """
    return downsampling_problem("U-Net++", img_size, UNETPP_FACTOR, why="four 2x max-poolings", norm=cfg.norm)


def build_unetpp(
    cfg: UNetPlusPlusConfig,
    *,
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    img_size: Sequence[int] | None = None,
) -> UNetPlusPlus:
    """Build :class:`UNetPlusPlus`; ``img_size`` is unused (fully convolutional, checked by the size rule)."""
    return UNetPlusPlus(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        features=(*cfg.channels, cfg.decoder_top),
        act=cfg.act,
        norm=cfg.norm,
        dropout=cfg.dropout,
        upsample=cfg.upsample,
    )


def unet_width_problem(
    cfg: UNetPlusPlusConfig, unet: UNetFamilyConfig, *, source: Callable[[str], str]
) -> str | None:
    """None when a U-Net++ arm has the U-Net family's encoder, else what differs and what to set.

    Args:
        cfg: the U-Net++ arm's config.
        unet: the study's U-Net family config (defaults plus the spec's ``model.unet``).
        source: field -> the spec key that sets it for this arm (``model.unetpp.channels`` or
            ``architectures.<name>.channels``), named in the fix.
    """
    key = source("channels")
    if len(unet.channels) != len(cfg.channels) or any(s != 2 for s in unet.strides):
        return (
            f"model.unet.channels {list(unet.channels)} with strides {list(unet.strides)} cannot match U-Net++, "
            f"which always has 5 levels halved by 2; give model.unet 5 channels and strides [2, 2, 2, 2] "
            f"and set {key} to the same channels"
        )
    if cfg.channels != unet.channels:
        return (
            f"{key} {list(cfg.channels)} differs from model.unet.channels {list(unet.channels)}, so more than "
            f"the skips would differ; set {key}: {list(unet.channels)}"
        )
    return None
