"""Networks and perturbations by import path (MONAI bundle syntax): a module of the user's, found
from the project folder, checked by validate in one line per mistake, built by MONAI's
ConfigParser, trained one step before a study starts; a `_target_` perturbation from outside the
package meets the registry's contract (identity at 0, seeded, shape and dtype kept)."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from study.cli import app
from study.conformal import Calibration
from study.models import TargetConfig, build_network, parameter_count, resolve_architecture
from study.perturbations import condition_seed, get_perturbation
from study.run.driver.preflight import preflight
from study.serving.package import Preprocessing, load_package, write_package
from study.spec import load_spec
from study.training.inputs.study_data import build_study_data

runner = CliRunner()

NETS = '''
import torch.nn as nn
from monai.networks.nets import BasicUNet


class Small(nn.Module):
    def __init__(self, spatial_dims, in_channels, out_channels, width=4):
        super().__init__()
        w = width
        self.net = BasicUNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels,
                             features=(w, w, 2 * w, 4 * w, 8 * w, w))

    def forward(self, x):
        return self.net(x)


class HalfSize(Small):
    def forward(self, x):
        return self.net(x)[:, :, ::2]


def make_list(spatial_dims, in_channels, out_channels):
    return [1, 2]
'''
PERTS = '''
import numpy as np


def darken(image, *, factor, rng):
    return image * factor + rng.normal(0, 0.01, image.shape).astype(np.float32)


def crop(image, *, n):
    return image[..., n:]
'''
SMALL = {"_target_": "segtest_nets.Small", "spatial_dims": "@spatial_dims", "in_channels": "@in_channels",
         "out_channels": "@out_channels"}


def _by_severity(make):
    return {s: make(s) for s in range(1, 6)}


@pytest.fixture
def user_folder(tmp_path, monkeypatch):
    """The user's project folder, current, with their modules in it."""
    (tmp_path / "segtest_nets.py").write_text(NETS)
    (tmp_path / "segtest_perts.py").write_text(PERTS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("segtest_nets", "segtest_perts"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    return tmp_path


def _validate(path) -> tuple[int, str]:
    result = runner.invoke(app, ["validate", str(path)])
    return result.exit_code, result.stderr.strip()


# --- networks ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arch", "factors", "expected"),
    [
        ({**SMALL, "_target_": "segtest_netz.Small"}, {}, "architectures.mine._target_: no module 'segtest_netz' found"),
        ({**SMALL, "_target_": "segtest_nets.Smal"}, {}, "architectures.mine._target_: 'segtest_nets' has no 'Smal'; did you mean 'segtest_nets.Small'?"),
        ({**SMALL, "_target_": "Small"}, {}, "architectures.mine._target_: 'Small' is not an import path; accepted: module.Name"),
        ({**SMALL, "widht": 3}, {}, "architectures.mine.widht: segtest_nets.Small takes no argument 'widht'; did you mean 'width'? Accepted: in_channels, out_channels, spatial_dims, width"),
        ({k: v for k, v in SMALL.items() if k != "out_channels"}, {}, "architectures.mine: segtest_nets.Small needs the argument(s) out_channels (e.g. out_channels: '@out_channels')"),
        ({**SMALL, "width": "@wdth"}, {}, "architectures.mine.width: '@wdth' refers to nothing; accepted references: @alpha, @img_size"),
        ({**SMALL, "width": "$4 * 2"}, {}, "architectures.mine.width: '$4 * 2' is a MONAI expression"),
        ({**SMALL, "_requires_": "@x"}, {}, "architectures.mine._requires_: not supported in a study spec"),
        ({**SMALL, "width": "@width"}, {"width": [2, 4]}, "factors.width: arm 'unet' does not take it"),
    ],
)
def test_validate_refuses_a_bad_target_arm_in_one_line(user_folder, write_spec, arch, factors, expected):
    spec = write_spec(architectures={"mine": arch}, factors={"architecture": ["unet", "mine"], "alpha": [0.2], **factors})
    code, err = _validate(spec)
    assert code == 2 and len(err.splitlines()) == 1 and expected in err, err


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("segtest_nets.HalfSize", "architectures.mine: output shape [6, 1, 16, 32] for input [6, 1, 32, 32]; accepted: [6, 1, 32, 32]"),
        ("segtest_nets.make_list", "architectures.mine._target_: segtest_nets.make_list returned a list; accepted: a torch.nn.Module"),
    ],
)
def test_validate_builds_the_arm_and_refuses_what_does_not_fit_the_study(user_folder, write_spec, target, expected):
    arch = {**SMALL, "_target_": target}
    spec = write_spec(architectures={"mine": arch}, factors={"architecture": ["mine"], "alpha": [0.2]},
                      evaluation__reference_arm=None)
    code, err = _validate(spec)
    assert code == 2 and len(err.splitlines()) == 1 and expected in err, err


def test_arms_that_differ_in_one_argument_and_a_factor_over_it(user_folder, write_spec):
    wide = write_spec("wide.yaml", architectures={"mine": {**SMALL, "width": 2}, "mine_wide": {"base": "mine", "width": 8}},
                      factors={"architecture": ["unet", "mine", "mine_wide"], "alpha": [0.2]})
    spec = load_spec(wide)
    small, big = (resolve_architecture(n, custom=spec.architectures) for n in ("mine", "mine_wide"))
    kwargs = {"spatial_dims": 2, "in_channels": 1, "out_channels": 1, "img_size": [32, 32]}
    assert 0 < parameter_count(small, **kwargs) < parameter_count(big, **kwargs)
    # A factor over the argument: one network per level, each trained one step by the preflight.
    over = load_spec(write_spec("over.yaml", architectures={"mine": {**SMALL, "width": "@width"}},
                                factors={"architecture": ["mine"], "alpha": [0.2], "width": [2, 4]},
                                evaluation__reference_arm=None))
    assert over.network_factors == ("width",)
    assert preflight(over, build_study_data(over)).checked == 2
    cfg = resolve_architecture("mine", custom=over.architectures, levels={"width": 4, "alpha": 0.2})
    assert isinstance(cfg, TargetConfig) and cfg.levels == {"width": 4} and cfg.target == "segtest_nets.Small"


def test_a_target_arm_packages_and_loads_like_a_built_in(user_folder, tmp_path):
    cfg = resolve_architecture("mine", custom={"mine": SMALL})
    net = build_network(cfg, spatial_dims=2, in_channels=1, out_channels=1, img_size=[32, 32])
    prep = Preprocessing(spatial_dims=2, in_channels=1, img_size=[32, 32], intensity="as_is", threshold=0.5,
                         td_defined=False, spacing=[1.0, 1.0])
    calibration = Calibration(alpha=0.1, fnr_alpha=0.1, threshold=0.5, strata={})
    write_package(tmp_path / "pkg", state_dict=net.state_dict(), architecture=cfg, preprocessing=prep, calibration=calibration)
    loaded = load_package(tmp_path / "pkg")
    x = torch.rand(1, 1, 32, 32)
    net.eval()
    assert torch.equal(loaded.network(x), net(x))


# --- perturbations -----------------------------------------------------------------------------


def _own(user_folder):
    return {
        "darken": {"_target_": "segtest_perts.darken", "severities": _by_severity(lambda s: {"factor": 1 - 0.1 * s})},
        "spikes": {"_target_": "torchio.RandomSpike", "num_spikes": [1, 1],
                   "severities": _by_severity(lambda s: {"intensity": [0.1 * s, 0.1 * s]})},
        "monai_noise": {"_target_": "monai.transforms.RandGaussianNoise", "severities": _by_severity(lambda s: {"std": 0.05 * s})},
    }


@pytest.mark.parametrize("name", ["darken", "spikes", "monai_noise"])
@pytest.mark.parametrize("shape", [(1, 24, 24), (2, 12, 12, 12)])
def test_a_target_perturbation_meets_the_registry_contract(user_folder, name, shape):
    p = get_perturbation(name, custom=_own(user_folder))
    image = np.random.default_rng(0).random(shape).astype(np.float32)
    before = image.copy()
    out, params = p.apply(image, severity=0, seed=1)
    assert out is image and params == {}
    torch.manual_seed(123)
    a, params_a = p.apply(image, severity=3, seed=condition_seed(0, "img", name, 3))
    trial_rng = torch.rand(1)  # the caller's torch RNG is left as it was
    torch.manual_seed(123)
    assert torch.equal(trial_rng, torch.rand(1))
    b, params_b = p.apply(image, severity=3, seed=condition_seed(0, "img", name, 3))
    c, _ = p.apply(image, severity=3, seed=condition_seed(0, "img2", name, 3))
    assert np.array_equal(a, b) and params_a == params_b and not np.array_equal(a, c)
    assert a.shape == image.shape and a.dtype == image.dtype and not np.array_equal(a, image)
    np.testing.assert_array_equal(image, before)
    mad = [float(np.abs(p.apply(image, severity=s, seed=7)[0] - image).mean()) for s in (1, 5)]
    assert mad[1] > mad[0]


def test_a_monai_transform_runs_at_prob_one_unless_the_spec_says(user_folder):
    p = get_perturbation("monai_noise", custom=_own(user_folder))
    assert p.transform(2).prob == 1.0  # MONAI's default 0.1 would leave 9 images in 10 clean
    image = np.full((1, 8, 8), 0.5, np.float32)
    assert all(not np.array_equal(p.apply(image, severity=1, seed=s)[0], image) for s in range(20))


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"_target_": "torchio.RandomGhosting", "num_gosts": 3, "severities": _by_severity(lambda s: {"intensity": 0.1 * s})},
         "perturbations.mine.num_gosts: torchio.RandomGhosting takes no argument 'num_gosts'; did you mean 'num_ghosts'?"),
        ({"_target_": "torchio.RandomGhosting", "severities": {1: {"intensity": 0.1}}},
         "perturbations.mine.severities: needs the arguments of each severity 1-5"),
        ({"_target_": "segtest_perts.darken", "severities": _by_severity(lambda s: {"factr": 0.1 * s})},
         "perturbations.mine.severities.1.factr: segtest_perts.darken takes no argument 'factr'"),
        ({"_target_": "segtest_perts.darken", "severities": _by_severity(lambda s: {"factor": 0.5})},
         "perturbations.mine.severities: every severity has the same arguments"),
        ({"_target_": "segtest_perts.nope", "severities": _by_severity(lambda s: {"factor": s})},
         "perturbations.mine._target_: 'segtest_perts' has no 'nope'"),
    ],
)
def test_validate_refuses_a_bad_target_perturbation_in_one_line(user_folder, write_spec, entry, expected):
    spec = write_spec(perturbations={"mine": entry}, evaluation__perturbations=["mine"])
    code, err = _validate(spec)
    assert code == 2 and len(err.splitlines()) == 1 and expected in err, err


def test_validate_applies_own_perturbations_and_refuses_one_that_changes_the_shape(user_folder, write_spec):
    crop = {"_target_": "segtest_perts.crop", "severities": _by_severity(lambda s: {"n": s})}
    spec = write_spec(perturbations={"crop": crop}, evaluation__perturbations=["crop"],
                      factors={"architecture": ["unet"], "alpha": [0.2]})
    code, err = _validate(spec)
    assert code == 2 and "perturbations.crop.severities.1: segtest_perts.crop turned an image of shape [1, 32, 32] into [1, 32, 31]" in err
    taken = write_spec("taken.yaml", perturbations={"motion": crop}, evaluation__perturbations=["motion"])
    code, err = _validate(taken)
    assert code == 2 and "perturbations.motion: the name is taken by a built-in perturbation" in err


def test_a_spec_with_own_network_and_perturbation_validates(user_folder, write_spec):
    spec = write_spec(architectures={"mine": SMALL}, perturbations=_own(user_folder),
                      factors={"architecture": ["unet", "mine"], "alpha": [0.2]},
                      evaluation__perturbations=["motion", "ghosting", "darken", "spikes"])
    result = runner.invoke(app, ["validate", str(spec)])
    assert result.exit_code == 0, result.output
    assert "2 cells x 1 seeds" in result.stdout


def test_project_modules_are_found_from_the_current_folder(tmp_path, monkeypatch):
    """As `python -m` finds them: the console script's own path does not hold the project folder."""
    from study.targets import locate

    (tmp_path / "segtest_found.py").write_text(textwrap.dedent("""
        def thing():
            return 1
    """))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.delitem(sys.modules, "segtest_found", raising=False)
    assert locate("segtest_found.thing", where="architectures.x")() == 1
