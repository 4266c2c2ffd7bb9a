"""UNETR: a thin builder over ``monai.networks.nets.UNETR``.

MONAI fixes UNETR's patch size at 16 per dimension (and its ViT at 12 layers), and the ViT's
position embedding is sized for one image size, so the network is built for one ``img_size``
(the training patch) and every dimension of it must be a multiple of 16.
"""

from __future__ import annotations

from collections.abc import Sequence

from monai.networks.nets import UNETR

from study.models.configs import UNETRConfig
from study.models.sizes import multiple_problem

__all__ = ["UNETR_PATCH", "build_unetr", "unetr_size_problem"]

UNETR_PATCH = 16  # fixed inside monai.networks.nets.UNETR


def unetr_size_problem(cfg: UNETRConfig | None, img_size: Sequence[int]) -> str | None:
    """None when UNETR can take this patch/image size, else a short reason naming the bad size.

    ``cfg`` is accepted so every family's size check has one signature; UNETR's patch is fixed.
    """
    return multiple_problem("UNETR", img_size, UNETR_PATCH)


def build_unetr(
    cfg: UNETRConfig, *, spatial_dims: int, in_channels: int, out_channels: int, img_size: Sequence[int]
) -> UNETR:
    """Build MONAI's UNETR for ``img_size`` (one entry per spatial dimension).

    Raises:
        ValueError: ``img_size`` has the wrong length or a dimension is not a multiple of 16
            (callers check user input with :func:`unetr_size_problem` first).
    """
    if len(img_size) != spatial_dims:
        raise ValueError(f"img_size needs {spatial_dims} entries, got {list(img_size)}")
    problem = unetr_size_problem(cfg, img_size)
    if problem:
        raise ValueError(problem)
    return UNETR(
        in_channels=in_channels,
        out_channels=out_channels,
        img_size=tuple(int(s) for s in img_size),
        feature_size=cfg.feature_size,
        hidden_size=cfg.hidden_size,
        mlp_dim=cfg.mlp_dim,
        num_heads=cfg.num_heads,
        norm_name=cfg.norm_name,
        dropout_rate=cfg.dropout,
        spatial_dims=spatial_dims,
    )
