"""SwinUNETR: a thin builder over ``monai.networks.nets.SwinUNETR``.

A. Hatamizadeh, V. Nath, Y. Tang, D. Yang, H. Roth, D. Xu, "Swin UNETR: Swin Transformers for
Semantic Segmentation of Brain Tumors in MRI Images", BrainLes 2021
(https://arxiv.org/abs/2201.01266). MONAI 1.6 builds it without an image size (windows adapt to
the input); the patch tokens are 2 voxels and four patch-merging stages halve them again, so
every dimension must be a multiple of 2**5 = 32 (MONAI's own check: ``patch_size ** 5``). The
deepest features, 1/32 of the input, pass through a normalised conv block.
"""

from __future__ import annotations

from collections.abc import Sequence

from monai.networks.nets import SwinUNETR

from study.models.configs import SwinUNETRConfig
from study.models.sizes import downsampling_problem

__all__ = ["SWIN_FACTOR", "build_swinunetr", "swinunetr_size_problem"]

SWIN_PATCH = 2  # MONAI's default token size; the decoder's last upsampling assumes it
SWIN_FACTOR = SWIN_PATCH**5


def swinunetr_size_problem(cfg: SwinUNETRConfig, img_size: Sequence[int]) -> str | None:
    """None when SwinUNETR can take this patch/image size, else a short reason naming the bad size."""
    why = "2-voxel patch tokens merged 4 times"
    return downsampling_problem("SwinUNETR", img_size, SWIN_FACTOR, why=why, norm=cfg.norm_name)


def build_swinunetr(
    cfg: SwinUNETRConfig, *, spatial_dims: int, in_channels: int, out_channels: int, img_size: Sequence[int] | None = None
) -> SwinUNETR:
    """Build MONAI's SwinUNETR; ``img_size`` is unused (MONAI 1.6 takes none; checked by the size rule)."""
    return SwinUNETR(
        in_channels=in_channels,
        out_channels=out_channels,
        patch_size=SWIN_PATCH,
        depths=cfg.depths,
        num_heads=cfg.num_heads,
        window_size=cfg.window_size,
        feature_size=cfg.feature_size,
        norm_name=cfg.norm_name,
        drop_rate=cfg.dropout,
        attn_drop_rate=cfg.attn_dropout,
        dropout_path_rate=cfg.drop_path,
        spatial_dims=spatial_dims,
        use_v2=cfg.use_v2,
    )
