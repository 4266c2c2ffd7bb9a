"""DynUNet: a thin builder over ``monai.networks.nets.DynUNet`` (the nnU-Net architecture).

F. Isensee, P. Jaeger, S. Kohl, J. Petersen, K. Maier-Hein, "nnU-Net: a self-configuring method
for deep learning-based biomedical image segmentation", Nature Methods 2021
(https://arxiv.org/abs/1904.08128). MONAI documents its size rule: every dimension divisible by
the product of all strides, and one dimension at least twice that (instance norm at the
bottleneck needs more than one voxel).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from monai.networks.nets import DynUNet

from study.models.configs import DynUNetConfig
from study.models.sizes import downsampling_problem

__all__ = ["build_dynunet", "dynunet_size_problem"]


def dynunet_size_problem(cfg: DynUNetConfig, img_size: Sequence[int]) -> str | None:
    """None when DynUNet can take this patch/image size, else a short reason naming the bad size."""
    factor = math.prod(cfg.strides)
    why = f"the product of strides {list(cfg.strides)}"
    return downsampling_problem("DynUNet", img_size, factor, why=why, norm=cfg.norm_name)


def build_dynunet(
    cfg: DynUNetConfig, *, spatial_dims: int, in_channels: int, out_channels: int, img_size: Sequence[int] | None = None
) -> DynUNet:
    """Build MONAI's DynUNet without deep supervision; ``img_size`` is unused (checked by the size rule).

    Instance norm is MONAI's default for DynUNet, with affine parameters (as nnU-Net's).
    """
    norm: str | tuple = ("instance", {"affine": True}) if cfg.norm_name == "instance" else cfg.norm_name
    return DynUNet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        kernel_size=cfg.kernel_size,
        strides=cfg.strides,
        upsample_kernel_size=cfg.strides[1:],
        filters=cfg.filters,
        dropout=cfg.dropout or None,
        norm_name=norm,
        act_name=cfg.act_name,
        deep_supervision=False,
        res_block=cfg.res_block,
    )
