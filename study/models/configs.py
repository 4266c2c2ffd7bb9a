"""Typed architecture configs: an architecture is data (kind + fields), rebuilt identically anywhere.

A spec names an architecture; the registry (`study/models/registry.py:FAMILIES`, one entry per
family) turns that name into one of these frozen configs, and :func:`study.models.build_network`
turns a config into a module. Storing the config (as JSON next
to the weights) is enough to rebuild the same network for inference, as nnU-Net does with plans.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

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



class UNetFamilyConfig(StrictModel):
    """MONAI-style U-Net with two ablation toggles: a per-level skip mask and attention gates.

    Defaults are the reference model of the skip-connection study: channels 16..256, four
    stride-2 levels, no residual units, batch norm, ReLU, every skip kept, no gates.

    Example:
        >>> UNetFamilyConfig(channels=(8, 16, 32), strides=(2, 2), skips=(True, False)).skip_mask
        (True, False)
    """

    kind: Literal["unet"] = "unet"
    channels: tuple[int, ...] = (16, 32, 64, 128, 256)
    strides: tuple[int, ...] = (2, 2, 2, 2)
    num_res_units: int = Field(0, ge=0, le=16)
    norm: str = "batch"
    act: str = "relu"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    kernel_size: int = Field(3, gt=0, le=15)
    up_kernel_size: int = Field(3, gt=0, le=15)
    # "all", "none", or one flag per level; index 0 is the top (full-resolution) level.
    skips: Literal["all", "none"] | tuple[bool, ...] = "all"
    attention: bool = False

    @field_validator("channels", "strides")
    @classmethod
    def _positive(cls, v: tuple[int, ...], info: ValidationInfo) -> tuple[int, ...]:
        if any(x <= 0 for x in v):
            raise ValueError(f"{info.field_name} must all be positive, got {list(v)}")
        top = 4096 if info.field_name == "channels" else 8  # a bound, so a typo cannot ask for terabytes
        if any(x > top for x in v) or len(v) > 16:
            raise ValueError(f"{info.field_name} must be at most 16 values of at most {top}, got {list(v)}")
        return v

    @field_validator("kernel_size", "up_kernel_size")
    @classmethod
    def _odd(cls, v: int, info: ValidationInfo) -> int:
        # MONAI's same-padding only keeps sizes aligned for odd kernels.
        if v % 2 == 0:
            raise ValueError(f"{info.field_name} must be odd, got {v}")
        return v

    @field_validator("norm")
    @classmethod
    def _norm(cls, v: str) -> str:
        return _one_of("norm", v, NORMS)

    @field_validator("act")
    @classmethod
    def _act(cls, v: str) -> str:
        return _one_of("act", v, ACTS)

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
    norm_name: str = "instance"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)

    @field_validator("norm_name")
    @classmethod
    def _norm(cls, v: str) -> str:
        return _one_of("norm_name", v, NORMS)

    @model_validator(mode="after")
    def _heads(self) -> UNETRConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} must be divisible by num_heads {self.num_heads}"
            )
        return self

