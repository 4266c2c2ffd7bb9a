"""The architecture registry: MONAI equivalence, the skip/attention toggles, presets, errors."""

from __future__ import annotations

import pytest
import torch
from monai.networks.layers import SkipConnection
from monai.networks.nets import UNet
from monai.networks.nets.attentionunet import AttentionBlock
from pydantic import TypeAdapter

from study.errors import SegstudyError
from study.models import (
    ACTS,
    NORMS,
    PRESETS,
    FAMILIES,
    ArchConfig,
    SkipUNet,
    get_family,
    memory_format,
    UNetFamilyConfig,
    UNETRConfig,
    architecture_names,
    parameter_count,
    build_network,
    check_input_size,
    resolve_architecture,
)
from study.models.nested_unet import NestedUNet
from study.models.unet_family import GatedSkipConnection
from test_families import SMALL as EVERY  # small settings for every family

SMALL = {kind: fields for kind, fields in EVERY.items() if kind != "target"}  # a _target_ arm is not a model: override


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count(module: torch.nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in module.modules())


def skip_unet(**kw) -> SkipUNet:
    args = dict(spatial_dims=2, in_channels=1, out_channels=1, channels=(4, 8, 16), strides=(2, 2))
    return SkipUNet(**(args | kw))


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("num_res_units", [0, 2])
@pytest.mark.parametrize(("norm", "act"), [("batch", "relu"), ("instance", "prelu")])
def test_all_skips_no_attention_is_monai_unet(spatial_dims, num_res_units, norm, act):
    kw = dict(spatial_dims=spatial_dims, in_channels=1, out_channels=2, channels=(4, 8, 16, 32), strides=(2, 2, 2))
    ref = UNet(**kw, num_res_units=num_res_units, norm=norm, act=act)
    net = SkipUNet(**kw, num_res_units=num_res_units, norm=norm, act=act)
    assert n_params(net) == n_params(ref)
    # Same modules in the same places: MONAI's weights load strictly and give the same output.
    net.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(1, 1, *([16] * spatial_dims), generator=torch.Generator().manual_seed(0))
    ref.eval(), net.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(x), ref(x))
    assert count(net, SkipConnection) == 3


def test_noskip_shrinks_every_up_layer_and_removes_concatenation():
    full, none = skip_unet(), skip_unet(skips=(False, False))
    assert [lv.up_in_channels for lv in full.levels] == [4 + 4, 8 + 16]
    assert [lv.up_in_channels for lv in none.levels] == [4, 16]  # c, and channels[-1] at the bottom
    assert count(none, SkipConnection) == 0 and count(full, SkipConnection) == 2
    # Only the transposed up convs lose input weights: c_i * out_i * 3 * 3 per level.
    assert n_params(full) - n_params(none) == 4 * 1 * 9 + 8 * 4 * 9
    assert none.model[2].conv.in_channels == 4


def test_partial_mask_changes_only_that_level():
    full, top_only = skip_unet(), skip_unet(skips=(True, False))
    assert [lv.up_in_channels for lv in top_only.levels] == [8, 16]
    assert [lv.skip for lv in top_only.levels] == [True, False]
    assert isinstance(top_only.model[1], SkipConnection)  # top level keeps its skip
    bottom_level = top_only.model[1].submodule
    assert not any(isinstance(m, SkipConnection) for m in bottom_level)
    assert n_params(full) - n_params(top_only) == 8 * 4 * 9


def test_attention_gates_every_kept_skip_with_the_deeper_output():
    plain = skip_unet()
    gated = skip_unet(attention=True)
    assert count(gated, GatedSkipConnection) == 2 and count(gated, SkipConnection) == 0
    gates = [m.gate for m in gated.modules() if isinstance(m, GatedSkipConnection)]
    # Gating width = deeper path output: 4 at level 0 (from level 1's up layer), 16 at the bottom.
    assert sorted(g.W_g[0].conv.in_channels for g in gates) == [4, 16]
    assert n_params(gated) - n_params(plain) == sum(n_params(g) for g in gates) > 0
    assert [lv.up_in_channels for lv in gated.levels] == [8, 24]
    partial = skip_unet(attention=True, skips=(False, True))
    assert count(partial, AttentionBlock) == 1
    assert [lv.attention for lv in partial.levels] == [False, True]


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("num_res_units", [0, 1])
def test_nested_skips_keep_the_unet_encoder_and_decoder(spatial_dims, num_res_units):
    """The dense nested skip type differs from the plain U-Net only in its skips: the encoder and the
    bottom are the same layers (shapes and widths), the up layers only take wider inputs."""
    kw = dict(spatial_dims=spatial_dims, in_channels=1, out_channels=1, channels=(4, 8, 16, 32), strides=(2, 2, 2),
              num_res_units=num_res_units)
    plain = build_network(UNetFamilyConfig(**{k: v for k, v in kw.items() if k in ("channels", "strides", "num_res_units")}),
                          spatial_dims=spatial_dims, in_channels=1, out_channels=1, img_size=[16] * spatial_dims)
    nested = build_network(resolve_architecture("nested_unet", family_overrides={"unet": {
        "channels": [4, 8, 16, 32], "strides": [2, 2, 2], "num_res_units": num_res_units}}),
        spatial_dims=spatial_dims, in_channels=1, out_channels=1, img_size=[16] * spatial_dims)
    assert isinstance(nested, NestedUNet) and not isinstance(plain, NestedUNet)
    # Level i's up layer takes (1 + nested nodes) * c_i + deeper: 3 nodes at the top, none at the bottom.
    assert [lv.up_in_channels for lv in nested.levels] == [4 * 3 + 4, 8 * 2 + 8, 16 + 32]
    assert [lv.up_in_channels for lv in plain.levels] == [8, 16, 48]
    assert len(nested.model.node) == 3 + 2 + 1 - 3  # n(n-1)/2 nodes for n = 3 levels
    encoder = [p.shape for p in nested.model.down.parameters()]
    plain_encoder = [p.shape for lv in range(3) for p in _down_layer(plain, lv).parameters()]
    assert encoder == plain_encoder
    x = torch.randn(2, 1, *([16] * spatial_dims), generator=torch.Generator().manual_seed(0))
    y = nested(x)
    assert y.shape == x.shape
    y.mean().backward()  # every node is on the path to the output
    assert all(p.grad is not None for p in nested.parameters())
    # The report's count is the network's, and the nested nodes are all the dense type adds.
    cfg = resolve_architecture("nested_unet", family_overrides={"unet": {
        "channels": [4, 8, 16, 32], "strides": [2, 2, 2], "num_res_units": num_res_units}})
    counted = parameter_count(cfg, spatial_dims=spatial_dims, in_channels=1, out_channels=1, img_size=[16] * spatial_dims)
    nodes = n_params(nested.model.node) + n_params(nested.model.node_up)
    assert counted == n_params(nested) > n_params(plain) + nodes > n_params(plain)


def _down_layer(net: SkipUNet, level: int) -> torch.nn.Module:
    """The plain SkipUNet's down layer at `level` (its recursive Sequential: down, skip(sub), up)."""
    block = net.model
    for _ in range(level):
        block = block[1].submodule
    return block[0]


def test_nested_needs_every_skip_ungated():
    with pytest.raises(SegstudyError, match="nested skips keep every level's skip, ungated"):
        resolve_architecture("nested_unet", custom={}, family_overrides={}) and resolve_architecture(
            "x", custom={"x": {"base": "nested_unet", "attention": True}})


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_runs_forward(name, spatial_dims):
    cfg = resolve_architecture(name, family_overrides=SMALL)
    size = [32] * spatial_dims
    net = build_network(cfg, spatial_dims=spatial_dims, in_channels=1, out_channels=2, img_size=size).eval()
    with torch.no_grad():
        y = net(torch.randn(1, 1, *size))
    assert y.shape == (1, 2, *size)


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name", list(PRESETS))
def test_a_preset_in_its_training_memory_format_trains_and_matches_the_plain_layout(name, spatial_dims):
    """Families marked channels_last train so on a CPU (never on a GPU, never a custom network):
    a forward and backward run in that layout and give the plain layout's output to float error."""
    cfg = resolve_architecture(name, family_overrides=SMALL)
    cpu = torch.device("cpu")
    fmt = memory_format(cfg, spatial_dims=spatial_dims, device=cpu)
    expected = {2: torch.channels_last, 3: torch.channels_last_3d}[spatial_dims] if get_family(cfg.kind).channels_last \
        else torch.contiguous_format
    assert fmt == expected
    assert memory_format(cfg, spatial_dims=spatial_dims, device=torch.device("cuda")) == torch.contiguous_format
    size = [32] * spatial_dims
    torch.manual_seed(0)
    plain = build_network(cfg, spatial_dims=spatial_dims, in_channels=1, out_channels=1, img_size=size)
    laid = build_network(cfg, spatial_dims=spatial_dims, in_channels=1, out_channels=1, img_size=size)
    laid.load_state_dict(plain.state_dict())
    laid = laid.to(cpu, memory_format=fmt)
    x = torch.randn(2, 1, *size)
    with torch.no_grad():  # eval: no dropout, batch norm from the same running statistics
        assert torch.allclose(laid.eval()(x), plain.eval()(x), atol=1e-4)
    for net in (laid, plain):
        net.train()(x).mean().backward()
    assert [p.grad is None for p in laid.parameters()] == [p.grad is None for p in plain.parameters()]


def test_only_the_families_measured_faster_train_channels_last():
    assert {kind for kind, family in FAMILIES.items() if family.channels_last} == {"unet", "unetpp"}


def test_unetr_config_reaches_monai_unetr():
    cfg = resolve_architecture("unetr", family_overrides=SMALL)
    net = build_network(cfg, spatial_dims=3, in_channels=1, out_channels=1, img_size=[32, 32, 48])
    assert net.hidden_size == 32 and net.feat_size == (2, 2, 3)
    assert net.out.conv.conv.in_channels == 4  # feature_size


def test_check_input_size_messages():
    assert check_input_size(UNETRConfig(), [48, 40]) == (
        "UNETR needs every patch/image dimension to be a multiple of 16, got 40"
    )
    assert check_input_size(UNETRConfig(), [32, 64, 96]) is None
    assert check_input_size(UNetFamilyConfig(), [48, 48]) is None
    assert check_input_size(UNetFamilyConfig(), [40, 48]) == (
        "this U-Net needs every patch/image dimension to be a multiple of 16 "
        "(the product of strides [2, 2, 2, 2]), got 40"
    )
    assert check_input_size(UNetFamilyConfig(channels=(4, 8, 16), strides=(2, 2)), [36, 36]) is None
    with pytest.raises(SegstudyError, match="multiple of 16, got 40"):
        build_network(UNETRConfig(), spatial_dims=2, in_channels=1, out_channels=1, img_size=[40, 48])


def test_family_overrides_and_custom_architectures():
    custom = {"top_skip_only": {"base": "unet", "skips": [True, False]}}
    overrides = {"unet": {"channels": [8, 16, 32], "strides": [2, 2]}}
    for name in ("unet", "noskip_unet", "attention_unet"):
        assert resolve_architecture(name, family_overrides=overrides).channels == (8, 16, 32)
    assert resolve_architecture("noskip_unet", family_overrides=overrides).skip_mask == (False, False)
    assert resolve_architecture("attention_unet", family_overrides=overrides).attention is True
    cfg = resolve_architecture("top_skip_only", family_overrides=overrides, custom=custom)
    assert cfg.skip_mask == (True, False) and cfg.strides == (2, 2)
    assert resolve_architecture("unet") == UNetFamilyConfig()  # presets untouched by overrides
    assert architecture_names(custom=custom) == (*PRESETS, "top_skip_only")
    assert architecture_names(custom=custom)[:5] == ("unet", "noskip_unet", "attention_unet", "nested_unet", "unetr")


def test_config_round_trips_through_json():
    cfg = resolve_architecture("top", custom={"top": {"base": "attention_unet", "skips": [True, False, True, True]}})
    again = TypeAdapter(ArchConfig).validate_json(cfg.model_dump_json())
    assert again == cfg and isinstance(again, UNetFamilyConfig)
    assert isinstance(TypeAdapter(ArchConfig).validate_python({"kind": "unetr"}), UNETRConfig)


@pytest.mark.parametrize(
    ("name", "kwargs", "expected"),
    [
        ("unte", {}, "unknown architecture 'unte'; did you mean 'unet'?"),
        ("top", {"custom": {"top": {"base": "unett"}}}, "architectures.top.base: unknown base architecture 'unett'"),
        ("top", {"custom": {"top": {"skips": [True]}}}, "architectures.top: 'base' (one of unet, noskip_unet"),
        (
            "top",
            {"custom": {"top": {"base": "unet", "skips": [True, False]}}},
            "architecture 'top': skips (set in architectures.top): skips needs one flag per level (4, index 0 = top)",
        ),
        (
            "top",
            {"custom": {"top": {"base": "unet", "skips": [True, "x", True, True]}}},
            "architecture 'top': skips[1] (set in architectures.top): Input should be a valid boolean",
        ),
        ("unet", {"family_overrides": {"unet": {"chanels": [4, 8]}}}, "did you mean 'channels'?"),
        ("unet", {"family_overrides": {"unte": {}}}, "model: unknown model family 'unte'"),
        ("unet", {"family_overrides": {"unet": {"norm": "group"}}}, "norm 'group' is not accepted"),
        ("unet", {"family_overrides": {"unet": {"channels": [4, -8], "strides": [2]}}}, "channels must all be"),
        ("unetr", {"family_overrides": {"unetr": {"num_heads": 5}}}, "hidden_size 768 must be divisible by num_heads"),
        ("unet", {"custom": {"unet": {"base": "unet"}}}, "architectures.unet: the name is taken by a preset"),
    ],
)
def test_resolve_architecture_errors_are_one_line(name, kwargs, expected):
    with pytest.raises(SegstudyError) as info:
        resolve_architecture(name, **kwargs)
    message = str(info.value)
    assert expected in message and "\n" not in message


def test_unknown_name_lists_custom_names():
    with pytest.raises(SegstudyError, match="did you mean 'top_skip_only'.*top_skip_only"):
        resolve_architecture("top_skip", custom={"top_skip_only": {"base": "unet"}}, where="s.yaml: factors")


@pytest.mark.parametrize("act", ACTS)
def test_every_accepted_act_builds(act):
    for norm in NORMS:
        cfg = UNetFamilyConfig(channels=(2, 4), strides=(2,), act=act.upper(), norm=norm)
        assert cfg.act == act
        net = build_network(cfg, spatial_dims=2, in_channels=1, out_channels=1, img_size=[8, 8]).eval()
        assert net(torch.randn(1, 1, 8, 8)).shape == (1, 1, 8, 8)


def test_every_family_is_one_registry_entry():
    """Presets, the config union and look-ups by kind all come from FAMILIES."""
    from study.models import CONFIG_CLASSES, FAMILIES, get_family

    assert list(CONFIG_CLASSES) == list(FAMILIES) == [
        "unet", "unetr", "segresnet", "swinunetr", "dynunet", "unetpp", "target"
    ]
    assert list(PRESETS) == [
        "unet", "noskip_unet", "attention_unet", "nested_unet", "unetr", "segresnet", "swinunetr", "dynunet", "unetpp"
    ]
    for kind, family in FAMILIES.items():
        assert family.config.model_fields["kind"].default == kind
        assert all(type(cfg) is family.config for cfg in family.presets.values())
    with pytest.raises(SegstudyError, match=r"^model: unknown model family 'unte'; did you mean 'unet'\?"):
        get_family("unte")
