"""The contract every architecture family keeps, and what each MONAI-built family adds.

Every `FAMILIES` entry builds in 2D and 3D, trains a step at the smallest size its rule accepts,
and its rule refuses a bad size in one line naming the cell; the new families' configs refuse bad
keys and values in one line; U-Net++ is MONAI's network with one output and the U-Net's widths.
"""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import BasicUNetPlusPlus
from pydantic import TypeAdapter

from conftest import SMOKE, SMOKE_3D
from study.errors import SegstudyError
from study.models import (
    FAMILIES,
    ArchConfig,
    PRESETS,
    UNetPlusPlus,
    build_network,
    check_input_size,
    parameter_count,
    resolve_architecture,
)
from study.spec import load_spec

# Small settings per family (the spec's `model:` section), so every test trains in well under a second.
SMALL = {
    "unet": {"channels": [4, 8, 16, 32, 64], "strides": [2, 2, 2, 2]},
    "unetr": {"feature_size": 4, "hidden_size": 32, "mlp_dim": 64, "num_heads": 2},
    "segresnet": {"init_filters": 4, "num_groups": 2},
    "swinunetr": {"feature_size": 12, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 2, 2], "norm_name": "batch"},
    "dynunet": {"filters": [4, 8, 16, 32, 64]},
    "unetpp": {"channels": [4, 8, 16, 32, 64]},
    # A network from outside segstudy, by import path (here one of MONAI's): study/models/target.py.
    "target": {"name": "basic", "network": {
        "_target_": "monai.networks.nets.BasicUNet", "spatial_dims": "@spatial_dims", "in_channels": "@in_channels",
        "out_channels": "@out_channels", "features": [4, 4, 8, 16, 32, 4]}},
}
NEW = ("segresnet", "swinunetr", "dynunet", "unetpp")


def small(kind: str, **fields: object):
    return FAMILIES[kind].config.model_validate(SMALL[kind] | fields)


def smallest_size(cfg, spatial_dims: int) -> int:
    if cfg.kind == "target":  # no size rule: validate runs the network at the study's sizes instead
        return 32
    return next(s for s in range(1, 257) if check_input_size(cfg, [s] * spatial_dims) is None)


def test_every_family_has_small_settings_here():
    assert set(SMALL) == set(FAMILIES)


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("kind", list(FAMILIES))
def test_family_trains_a_step_at_its_smallest_accepted_size(kind, spatial_dims):
    cfg = small(kind)
    size = [smallest_size(cfg, spatial_dims)] * spatial_dims
    torch.manual_seed(0)
    net = build_network(cfg, spatial_dims=spatial_dims, in_channels=1, out_channels=2, img_size=size)
    net.train()
    y = net(torch.randn(2, 1, *size))
    assert isinstance(y, torch.Tensor) and y.shape == (2, 2, *size)
    y.mean().backward()
    assert any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in net.parameters())
    net.eval()
    with torch.no_grad():
        assert net(torch.randn(1, 1, *size)).shape == (1, 2, *size)


@pytest.mark.parametrize(
    ("kind", "fields", "size", "expected"),
    [
        ("segresnet", {}, 20, "SegResNet needs every patch/image dimension to be a multiple of 8 (it halves the resolution 3 times, one per blocks_down entry after the first), got 20"),
        ("segresnet", {"blocks_down": [1, 1], "blocks_up": [1]}, 3, "multiple of 2 (it halves the resolution 1 times"),
        ("swinunetr", {}, 48, "SwinUNETR needs every patch/image dimension to be a multiple of 32 (2-voxel patch tokens merged 4 times), got 48"),
        ("dynunet", {}, 24, "DynUNet needs every patch/image dimension to be a multiple of 16 (the product of strides [1, 2, 2, 2, 2]), got 24"),
        ("dynunet", {"kernel_size": [3, 3, 3], "strides": [1, 2, 4], "filters": [4, 8, 16]}, 12, "multiple of 8 (the product of strides [1, 2, 4]), got 12"),
        ("unetpp", {}, 40, "U-Net++ needs every patch/image dimension to be a multiple of 16 (four 2x max-poolings), got 40"),
    ],
)
def test_size_rule_is_derived_from_the_config(kind, fields, size, expected):
    assert expected in check_input_size(small(kind, **fields), [size, size])


@pytest.mark.parametrize(
    ("kind", "fields", "size"),
    [("segresnet", {}, 20), ("swinunetr", {"norm_name": "batch"}, 48), ("dynunet", {"norm_name": "batch"}, 24)],
)
def test_a_refused_size_really_breaks_the_monai_network(kind, fields, size):
    """The rule is not stricter than the network: at the refused size MONAI fails or misaligns."""
    cfg = small(kind, **fields)
    ok = smallest_size(cfg, 2)
    net = FAMILIES[kind].build(cfg, spatial_dims=2, in_channels=1, out_channels=1, img_size=[ok, ok]).eval()
    with torch.no_grad():
        try:
            shape = net(torch.randn(1, 1, size, size)).shape[2:]
        except (RuntimeError, ValueError):
            return
    assert shape != (size, size)


@pytest.mark.parametrize("kind", ["segresnet", "swinunetr", "dynunet", "unetpp", "unet"])
def test_instance_norm_needs_more_than_one_voxel_at_the_deepest_level(kind):
    norm_key = {"swinunetr": "norm_name", "dynunet": "norm_name"}.get(kind, "norm")
    cfg = small(kind, **{norm_key: "instance"})
    batch_cfg = small(kind, **{norm_key: "batch"})
    smallest = smallest_size(batch_cfg, 3)
    problem = check_input_size(cfg, [smallest] * 3)
    assert f"with instance norm needs at least one patch/image dimension of {2 * smallest} or more" in problem
    assert check_input_size(cfg, [smallest, smallest, 2 * smallest]) is None
    # The cause is real: MONAI's network refuses to train there.
    net = FAMILIES[kind].build(cfg, spatial_dims=3, in_channels=1, out_channels=1, img_size=[smallest] * 3).train()
    with pytest.raises(ValueError, match="Expected more than 1 spatial element when training"):
        net(torch.randn(2, 1, smallest, smallest, smallest))


@pytest.mark.parametrize(
    ("base", "arch", "model", "size", "expected"),
    [
        (SMOKE, "segresnet", {}, 36,
         "factors.architecture[1]: 'segresnet' with image size 36: SegResNet needs every patch/image dimension to be a multiple of 8"),
        (SMOKE, "dynunet", {}, 40,
         "factors.architecture[1]: 'dynunet' with image size 40: DynUNet needs every patch/image dimension to be a multiple of 16"),
        (SMOKE, "swinunetr", {}, 32,
         "factors.architecture[1]: 'swinunetr' with image size 32: SwinUNETR with instance norm needs at least one patch/image dimension of 64 or more"),
        (SMOKE_3D, "swinunetr", {"swinunetr": {"norm_name": "batch"}}, [32, 48],
         "factors.architecture[1]: 'swinunetr' with patch size 48: SwinUNETR needs every patch/image dimension to be a multiple of 32"),
        (SMOKE_3D, "unetpp", {}, [16, 24],
         "factors.architecture[1]: 'unetpp' with patch size 24: U-Net++ needs every patch/image dimension to be a multiple of 16"),
    ],
)
def test_validate_names_the_cell_whose_size_a_family_refuses(write_spec, base, arch, model, size, expected):
    """As for UNETR's multiple-of-16 rule: the arm's index and name, the size, then the rule."""
    size_key = "data__image_size" if base == SMOKE else "factors__patch_size"
    overrides = {
        "factors__architecture": ["unet", arch],
        "model": {"unet": {"channels": [8, 16, 32], "strides": [2, 2]}, **model},
        size_key: size,
    }
    with pytest.raises(SegstudyError) as info:
        load_spec(write_spec(_base=base, **overrides))
    message = str(info.value)
    assert expected in message and "\n" not in message


@pytest.mark.parametrize(
    ("name", "overrides", "expected"),
    [
        ("segresnet", {"segresnet": {"blocks_dwn": [1, 1]}}, "unknown segresnet field 'blocks_dwn'; did you mean 'blocks_down'?"),
        ("segresnet", {"segresnet": {"blocks_up": [1, 1]}}, "blocks_up (set in model.segresnet): blocks_up needs len(blocks_down) - 1 = 3 entries, got [1, 1]"),
        ("segresnet", {"segresnet": {"init_filters": 12}}, "num_groups 8 must divide init_filters 12"),
        ("segresnet", {"segresnet": {"norm": "layer"}}, "norm (set in model.segresnet): Input should be 'group', 'batch' or 'instance'"),
        ("segresnet", {"segresnet": {"upsample_mode": "bilinear"}}, "upsample_mode (set in model.segresnet): Input should be 'nontrainable', 'deconv' or 'pixelshuffle'"),
        ("swinunetr", {"swinunetr": {"feature_size": 16}}, "feature_size (set in model.swinunetr): Input should be a multiple of 12 (got 16)"),
        ("swinunetr", {"swinunetr": {"depths": [2, 2, 2]}}, "depths needs 4 entries (one per Swin stage), got [2, 2, 2]"),
        ("swinunetr", {"swinunetr": {"num_heads": [3, 6, 12, 7]}}, "num_heads[3] 7 must divide stage 3's width feature_size * 2**3 = 192"),
        ("swinunetr", {"swinunetr": {"img_size": [64, 64, 64]}}, "unknown swinunetr field 'img_size'"),
        ("dynunet", {"dynunet": {"strides": [2, 2, 2, 2, 2]}}, "strides[0] must be 1 (the input block keeps full resolution), got 2"),
        ("dynunet", {"dynunet": {"kernel_size": [3, 3, 4, 3, 3]}}, "kernel_size must be odd, got [3, 3, 4, 3, 3]"),
        ("dynunet", {"dynunet": {"filters": [8, 16, 32]}}, "filters needs one entry per level of strides (5), got [8, 16, 32]"),
        ("dynunet", {"dynunet": {"kernel_size": [3, 1, 3], "strides": [1, 4, 2], "filters": [4, 8, 16]}}, "kernel_size[1] 1 is too small for strides[1] 4; accepted: at least 3"),
        ("dynunet", {"dynunet": {"act_name": "swishy"}}, "act_name 'swishy' is not accepted; choose one of relu"),
        ("dynunet", {"dynunet": {"deep_supervision": True}}, "unknown dynunet field 'deep_supervision'"),
        ("unetpp", {"unetpp": {"channels": [8, 16, 32]}}, "channels needs 5 encoder widths (U-Net++ always has 5 levels), got [8, 16, 32]"),
        ("unetpp", {"unetpp": {"channels": [8, 16, 32, 64, 0]}}, "channels must all be positive"),
        ("unetpp", {"unetpp": {"features": [8, 16, 32, 64, 128, 8]}}, "unknown unetpp field 'features'"),
    ],
)
def test_family_config_errors_are_one_line(name, overrides, expected):
    with pytest.raises(SegstudyError) as info:
        resolve_architecture(name, family_overrides=overrides)
    message = str(info.value)
    assert expected in message and "\n" not in message


def test_unetpp_is_monai_basic_unetplusplus_with_one_output():
    features = (4, 8, 16, 32, 64, 4)
    ref = BasicUNetPlusPlus(spatial_dims=2, in_channels=1, out_channels=2, features=features, norm="batch", act="relu")
    cfg = resolve_architecture("unetpp", family_overrides={"unetpp": {"channels": features[:5]}})
    net = build_network(cfg, spatial_dims=2, in_channels=1, out_channels=2, img_size=[32, 32])
    assert isinstance(net, UNetPlusPlus)
    net.load_state_dict(ref.state_dict(), strict=True)  # same modules, same keys
    x = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    ref.eval(), net.eval()
    with torch.no_grad():
        expected = ref(x)
        assert isinstance(expected, list) and len(expected) == 1
        torch.testing.assert_close(net(x), expected[0])
    assert parameter_count(cfg, spatial_dims=2, in_channels=1, out_channels=2, img_size=[32, 32]) == sum(
        p.numel() for p in ref.parameters()
    )


def test_unetpp_preset_has_the_unet_presets_encoder_widths():
    unet, dense = PRESETS["unet"], PRESETS["unetpp"]
    assert dense.channels == unet.channels == (16, 32, 64, 128, 256) and unet.strides == (2, 2, 2, 2)
    net = build_network(dense, spatial_dims=2, in_channels=1, out_channels=1, img_size=[64, 64])
    encoder = [net.conv_0_0, net.conv_1_0, net.conv_2_0, net.conv_3_0, net.conv_4_0]
    widths = [[m for m in block.modules() if isinstance(m, torch.nn.Conv2d)][-1].out_channels for block in encoder]
    assert tuple(widths) == unet.channels
    assert net.final_conv_0_4.in_channels == 16  # top decoder width defaults to channels[0]


@pytest.mark.parametrize(
    ("model", "custom", "expected"),
    [
        ({"unet": {"channels": [8, 16, 32, 64, 128]}}, {},
         "factors.architecture[2]: 'unetpp': model.unetpp.channels [16, 32, 64, 128, 256] differs from model.unet.channels "
         "[8, 16, 32, 64, 128], so more than the skips would differ; set model.unetpp.channels: [8, 16, 32, 64, 128]"),
        ({"unet": {"channels": [8, 16, 32], "strides": [2, 2]}}, {},
         "factors.architecture[2]: 'unetpp': model.unet.channels [8, 16, 32] with strides [2, 2] cannot match U-Net++"),
        ({"unet": {"channels": [8, 16, 32, 64, 128], "strides": [2, 2, 2, 1]}}, {},
         "strides [2, 2, 2, 1] cannot match U-Net++, which always has 5 levels halved by 2"),
        ({"unet": {"channels": [4, 8, 16, 32, 64]}, "unetpp": {"channels": [4, 8, 16, 32, 64]}},
         {"dense": {"base": "unetpp", "channels": [4, 8, 16, 32, 128]}},
         "factors.architecture[2]: 'dense': architectures.dense.channels [4, 8, 16, 32, 128] differs from model.unet.channels "
         "[4, 8, 16, 32, 64], so more than the skips would differ; set architectures.dense.channels: [4, 8, 16, 32, 64]"),
    ],
)
def test_validate_refuses_unetpp_widths_that_differ_from_the_unet_family(write_spec, model, custom, expected):
    dense = next(iter(custom), "unetpp")
    path = write_spec(factors__architecture=["unet", "noskip_unet", dense], model=model, architectures=custom)
    with pytest.raises(SegstudyError) as info:
        load_spec(path)
    message = str(info.value)
    assert expected in message and "\n" not in message


def test_matching_widths_validate_and_unetpp_alone_is_free(write_spec):
    widths = [4, 8, 16, 32, 64]
    arms = ["unet", "noskip_unet", "attention_unet", "unetpp"]
    spec = load_spec(write_spec(factors__architecture=arms, model={"unet": {"channels": widths, "strides": [2] * 4}, "unetpp": {"channels": widths}}))
    assert spec.factors["architecture"] == arms
    # Without a U-Net family arm there is nothing to match: the smoke U-Net's 3 levels do not matter.
    alone = write_spec(factors__architecture=["unetpp", "segresnet"], evaluation__reference_arm="unetpp")
    assert load_spec(alone).factors["architecture"] == ["unetpp", "segresnet"]


@pytest.mark.parametrize("kind", NEW)
def test_parameter_count_counts_the_built_network(kind):
    cfg = small(kind)
    counts = [
        parameter_count(cfg, spatial_dims=d, in_channels=1, out_channels=1, img_size=[smallest_size(cfg, d)] * d)
        for d in (2, 3)
    ]
    assert 0 < counts[0] < counts[1]  # 3D kernels hold more weights than 2D ones
    with pytest.raises(SegstudyError, match="needs every patch/image dimension"):
        parameter_count(cfg, spatial_dims=2, in_channels=1, out_channels=1, img_size=[33, 33])


@pytest.mark.parametrize("name", [n for n in PRESETS if PRESETS[n].kind in NEW])
def test_new_presets_round_trip_through_json(name):
    """A model package stores the config as JSON and rebuilds the same network from it."""
    cfg = PRESETS[name]
    assert TypeAdapter(ArchConfig).validate_json(cfg.model_dump_json()) == cfg


def test_shipped_architectures_spec_is_valid():
    spec = load_spec(SMOKE.with_name("architectures.yaml"))
    assert spec.factors["architecture"] == ["unet", "unetpp", "segresnet", "dynunet", "swinunetr"]
    assert spec.model["unetpp"]["channels"] == spec.model["unet"]["channels"]  # only the skips differ
