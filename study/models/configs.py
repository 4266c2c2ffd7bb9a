"""Typed architecture configs: an architecture is data (kind + fields), rebuilt identically anywhere.

A spec names an architecture; the registry (`study/models/registry.py:FAMILIES`, one entry per
family) turns that name into one of these frozen configs, and :func:`study.models.build_network`
turns a config into a module. Storing the config (as JSON next
to the weights) is enough to rebuild the same network for inference, as nnU-Net does with plans.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, ValidationInfo, field_validator, model_validator

from study.strict import StrictModel

# Names a spec may use for `norm` / `act`. All are MONAI factory names (`Norm`, `Act`) that build
# from the name alone and keep the channel count; left out on purpose: group/layer/localresponse
# norms (need extra arguments), syncbatch (multi-process only), instance_nvfuser and memswish
# (aliases), geglu (halves the channels), sigmoid/softmax/logsoftmax (output activations).
NORMS: tuple[str, ...] = ("batch", "instance")
ACTS: tuple[str, ...] = ("relu", "leakyrelu", "prelu", "elu", "selu", "celu", "gelu", "relu6", "swish", "mish", "tanh")


def _one_of(field: str, value: str, accepted: tuple[str, ...]) -> str:
    name = value.lower()
    if name not in accepted:
        raise ValueError(f"{field} '{value}' is not accepted; choose one of {', '.join(accepted)}")
    return name


def _norm(value: str, info: ValidationInfo) -> str:
    return _one_of(str(info.field_name), value, NORMS)


def _act(value: str, info: ValidationInfo) -> str:
    return _one_of(str(info.field_name), value, ACTS)


# Upper bounds per tuple field, so a typo cannot ask for terabytes.
_TOPS = {
    "channels": 4096, "filters": 4096, "strides": 8, "kernel_size": 15,
    "blocks_down": 32, "blocks_up": 32, "depths": 32, "num_heads": 256,
}


def _bounded(v: tuple[int, ...], info: ValidationInfo) -> tuple[int, ...]:
    """A tuple of positive ints, at most 16 of them, each under its field's bound."""
    field = str(info.field_name)
    if any(x <= 0 for x in v):
        raise ValueError(f"{field} must all be positive, got {list(v)}")
    top = _TOPS[field]
    if any(x > top for x in v) or len(v) > 16:
        raise ValueError(f"{field} must be at most 16 values of at most {top}, got {list(v)}")
    return v


def _odd(v: int | tuple[int, ...], info: ValidationInfo) -> int | tuple[int, ...]:
    # MONAI's same-padding only keeps sizes aligned for odd kernels.
    if any(k % 2 == 0 for k in (v if isinstance(v, tuple) else (v,))):
        raise ValueError(f"{info.field_name} must be odd, got {list(v) if isinstance(v, tuple) else v}")
    return v


# Field types shared by the families: the check runs wherever the type is used.
Norm = Annotated[str, AfterValidator(_norm)]
Act = Annotated[str, AfterValidator(_act)]
Ints = Annotated[tuple[int, ...], AfterValidator(_bounded)]
OddKernel = Annotated[int, Field(gt=0, le=15), AfterValidator(_odd)]
OddKernels = Annotated[tuple[int, ...], AfterValidator(_bounded), AfterValidator(_odd)]
Rate = Annotated[float, Field(ge=0.0, lt=1.0)]


class UNetFamilyConfig(StrictModel):
    """MONAI-style U-Net with three ablation toggles: a per-level skip mask, attention gates and
    UNet++'s dense nested skips.

    Defaults are the reference model of the skip-connection study: channels 16..256, four
    stride-2 levels, no residual units, batch norm, ReLU, every skip kept, no gates.

    Example:
        >>> UNetFamilyConfig(channels=(8, 16, 32), strides=(2, 2), skips=(True, False)).skip_mask
        (True, False)
    """

    kind: Literal["unet"] = "unet"
    channels: Ints = (16, 32, 64, 128, 256)
    strides: Ints = (2, 2, 2, 2)
    num_res_units: int = Field(0, ge=0, le=16)
    norm: Norm = "batch"
    act: Act = "relu"
    dropout: Rate = 0.0
    kernel_size: OddKernel = 3
    up_kernel_size: OddKernel = 3
    # "all", "none", or one flag per level; index 0 is the top (full-resolution) level.
    skips: Literal["all", "none"] | tuple[bool, ...] = "all"
    attention: bool = False
    # UNet++'s dense nested skips on this same network (study/models/nested_unet.py): the fourth skip type.
    nested: bool = False

    @model_validator(mode="after")
    def _shapes(self) -> UNetFamilyConfig:
        if len(self.channels) < 2:
            raise ValueError(f"channels needs at least 2 entries, got {list(self.channels)}")
        if len(self.strides) != len(self.channels) - 1:
            raise ValueError(
                f"strides needs len(channels) - 1 = {len(self.channels) - 1} entries, got {list(self.strides)}"
            )
        if isinstance(self.skips, tuple) and len(self.skips) != len(self.strides):
            raise ValueError(
                f"skips needs one flag per level ({len(self.strides)}, index 0 = top), got {list(self.skips)}"
            )
        if self.nested and (self.skips != "all" or self.attention):
            raise ValueError("nested skips keep every level's skip, ungated: set skips: all and attention: false")
        return self

    @property
    def skip_mask(self) -> tuple[bool, ...]:
        """One flag per level, top (full resolution) first."""
        if self.skips == "all":
            return (True,) * len(self.strides)
        if self.skips == "none":
            return (False,) * len(self.strides)
        return self.skips


class UNETRConfig(StrictModel):
    """MONAI UNETR (ViT encoder, 12 layers, patch 16); defaults are the context-vs-FBR study's.

    Example:
        >>> UNETRConfig(hidden_size=96, mlp_dim=192, num_heads=4).hidden_size
        96
    """

    kind: Literal["unetr"] = "unetr"
    feature_size: int = Field(16, gt=0, le=1024)
    hidden_size: int = Field(768, gt=0, le=8192)
    mlp_dim: int = Field(3072, gt=0, le=32768)
    num_heads: int = Field(12, gt=0, le=256)
    norm_name: Norm = "instance"
    dropout: Rate = 0.0

    @model_validator(mode="after")
    def _heads(self) -> UNETRConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} must be divisible by num_heads {self.num_heads}"
            )
        return self



class SegResNetConfig(StrictModel):
    """MONAI SegResNet (Myronenko 2018, without the VAE branch); defaults are MONAI's.

    ``blocks_down`` gives the residual blocks per encoder level (the first level keeps full
    resolution, each later one halves it), ``blocks_up`` one entry per decoder level.

    Example:
        >>> SegResNetConfig(init_filters=16, blocks_down=(1, 2, 2), blocks_up=(1, 1)).blocks_up
        (1, 1)
    """

    kind: Literal["segresnet"] = "segresnet"
    init_filters: int = Field(8, gt=0, le=1024)
    blocks_down: Ints = (1, 2, 2, 4)
    blocks_up: Ints = (1, 1, 1)
    # "group" is MONAI's default (num_groups groups); batch and instance as in NORMS.
    norm: Literal["group", "batch", "instance"] = "group"
    num_groups: int = Field(8, gt=0, le=1024)
    act: Act = "relu"
    dropout: Rate = 0.0
    upsample_mode: Literal["nontrainable", "deconv", "pixelshuffle"] = "nontrainable"

    @model_validator(mode="after")
    def _shapes(self) -> SegResNetConfig:
        if len(self.blocks_down) < 2:
            raise ValueError(f"blocks_down needs at least 2 levels, got {list(self.blocks_down)}")
        if len(self.blocks_up) != len(self.blocks_down) - 1:
            raise ValueError(
                f"blocks_up needs len(blocks_down) - 1 = {len(self.blocks_down) - 1} entries, got {list(self.blocks_up)}"
            )
        if self.norm == "group" and self.init_filters % self.num_groups:
            raise ValueError(
                f"num_groups {self.num_groups} must divide init_filters {self.init_filters} (group norm splits every level's channels)"
            )
        return self


class SwinUNETRConfig(StrictModel):
    """MONAI SwinUNETR (Hatamizadeh et al. 2022): four Swin stages over 2-voxel patch tokens.

    Defaults are MONAI's (feature_size 24, depths 2 x 4, heads 3/6/12/24, window 7). Stage ``i``
    works at ``feature_size * 2**i`` channels, which ``num_heads[i]`` must divide.

    Example:
        >>> SwinUNETRConfig(feature_size=12, depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4)).feature_size
        12
    """

    kind: Literal["swinunetr"] = "swinunetr"
    feature_size: int = Field(24, gt=0, le=1020, multiple_of=12)
    depths: Ints = (2, 2, 2, 2)
    num_heads: Ints = (3, 6, 12, 24)
    window_size: int = Field(7, gt=0, le=32)
    norm_name: Norm = "instance"
    dropout: Rate = 0.0
    attn_dropout: Rate = 0.0
    drop_path: Rate = 0.0
    use_v2: bool = False  # SwinUNETR-V2: a residual conv block before each Swin stage

    @field_validator("depths", "num_heads")
    @classmethod
    def _four(cls, v: tuple[int, ...], info: ValidationInfo) -> tuple[int, ...]:
        if len(v) != 4:
            raise ValueError(f"{info.field_name} needs 4 entries (one per Swin stage), got {list(v)}")
        return v

    @model_validator(mode="after")
    def _heads(self) -> SwinUNETRConfig:
        for i, heads in enumerate(self.num_heads):
            width = self.feature_size * 2**i
            if width % heads:
                raise ValueError(
                    f"num_heads[{i}] {heads} must divide stage {i}'s width feature_size * 2**{i} = {width}"
                )
        return self


class DynUNetConfig(StrictModel):
    """MONAI DynUNet (the nnU-Net architecture), one isotropic kernel and stride per level.

    Level 0 is the input block and must keep full resolution (stride 1: the masks are full
    size); the last level is the bottleneck. The decoder's transposed convolutions take
    ``strides[1:]`` as kernels (MONAI's documented choice); deep supervision is off (a trial
    trains one output). Defaults mirror the U-Net preset's widths 16..256 with four halvings.

    Example:
        >>> DynUNetConfig(kernel_size=(3, 3, 3), strides=(1, 2, 2), filters=(8, 16, 32)).strides
        (1, 2, 2)
    """

    kind: Literal["dynunet"] = "dynunet"
    kernel_size: OddKernels = (3, 3, 3, 3, 3)
    strides: Ints = (1, 2, 2, 2, 2)
    filters: Ints = (16, 32, 64, 128, 256)
    norm_name: Norm = "instance"
    act_name: Act = "leakyrelu"
    res_block: bool = False
    dropout: Rate = 0.0

    @model_validator(mode="after")
    def _shapes(self) -> DynUNetConfig:
        n = len(self.strides)
        if n < 3:
            raise ValueError(f"strides needs at least 3 levels (input, one down/up level, bottleneck), got {list(self.strides)}")
        for field in ("kernel_size", "filters"):
            if len(getattr(self, field)) != n:
                raise ValueError(f"{field} needs one entry per level of strides ({n}), got {list(getattr(self, field))}")
        if self.strides[0] != 1:
            raise ValueError(f"strides[0] must be 1 (the input block keeps full resolution), got {self.strides[0]}")
        for i, (k, s) in enumerate(zip(self.kernel_size, self.strides)):
            if k < s - 1:  # MONAI's padding (k - s + 1) / 2 would be negative
                raise ValueError(f"kernel_size[{i}] {k} is too small for strides[{i}] {s}; accepted: at least {s - 1}")
        return self


class UNetPlusPlusConfig(StrictModel):
    """MONAI BasicUNetPlusPlus (Zhou et al. 2018): a U-Net whose skips are dense nested paths.

    Always five levels, each halving the resolution by max-pooling. ``channels`` are the five
    encoder widths, named and defaulted as the U-Net family's so that a skip-type study can
    compare them one to one (`validate` refuses a mismatch: see `study/models/unetpp.py`);
    ``top_channels`` is the width after the last upsampling (None: ``channels[0]``). Norm and
    activation default to the U-Net preset's batch norm and ReLU, not MONAI's instance norm and
    LeakyReLU, so only the skips differ.

    Example:
        >>> UNetPlusPlusConfig(channels=(8, 16, 32, 64, 128)).decoder_top
        8
    """

    kind: Literal["unetpp"] = "unetpp"
    channels: Ints = (16, 32, 64, 128, 256)
    top_channels: int | None = Field(None, gt=0, le=4096)
    norm: Norm = "batch"
    act: Act = "relu"
    dropout: Rate = 0.0
    upsample: Literal["deconv", "pixelshuffle", "nontrainable"] = "deconv"

    @field_validator("channels")
    @classmethod
    def _five(cls, v: tuple[int, ...], info: ValidationInfo) -> tuple[int, ...]:
        if len(v) != 5:
            raise ValueError(f"channels needs 5 encoder widths (U-Net++ always has 5 levels), got {list(v)}")
        return v

    @property
    def decoder_top(self) -> int:
        """Width after the last upsampling (MONAI's ``features[5]``)."""
        return self.channels[0] if self.top_channels is None else self.top_channels
