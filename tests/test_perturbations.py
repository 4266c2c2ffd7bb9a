"""Perturbation registry: one contract run over every entry (2D and 3D), then per-family physics."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from study.data import texture_disparity
from study.data.synthetic2d import random_blob_mask
from study.data.textures import TexturePair, crop, texture_canvas
from study.errors import SegstudyError
from study.perturbations import (
    N_SEVERITIES,
    PERTURBATIONS,
    GaussianNoise,
    Perturbation,
    condition_seed,
    describe,
    get_perturbation,
)

NAMES = sorted(PERTURBATIONS)
SHAPES = {"2d": (32, 32), "3d": (16, 16, 16)}


def textured_blob(spatial: tuple[int, ...], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A (1, *spatial) float32 image in [0.1, 0.9]: bright fine-noise ball on a smooth dark background."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1.0, 1.0, n) for n in spatial], indexing="ij")
    mask = (np.sqrt(sum(g**2 for g in grids)) < 0.5).astype(np.uint8)
    bg = gaussian_filter(rng.random(spatial), 2.0)
    bg = (bg - bg.min()) / (bg.max() - bg.min())
    image = np.where(mask == 1, 0.5 + 0.4 * rng.random(spatial), 0.1 + 0.4 * bg)
    return image.astype(np.float32)[None], mask[None]


@pytest.fixture(params=sorted(SHAPES), scope="module")
def case(request) -> tuple[np.ndarray, np.ndarray]:
    return textured_blob(SHAPES[request.param])


def _seed(name: str, severity: int, image_id: str = "img-0") -> int:
    return condition_seed(0, image_id, name, severity)


# --- contract over every registry entry --------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_severity_zero_is_identity(name: str, case) -> None:
    image, mask = case
    out, params = PERTURBATIONS[name].apply(image, severity=0, seed=123, mask=mask)
    assert out is image
    assert params == {}


@pytest.mark.parametrize("name", NAMES)
def test_keeps_shape_dtype_and_input(name: str, case) -> None:
    image, mask = case
    before = image.copy()
    for severity in range(1, N_SEVERITIES + 1):
        out, _ = PERTURBATIONS[name].apply(image, severity=severity, seed=_seed(name, severity), mask=mask)
        assert out.shape == image.shape and out.dtype == np.float32
        assert np.isfinite(out).all()
        assert not np.array_equal(out, image), f"severity {severity} left the image unchanged"
    np.testing.assert_array_equal(image, before)  # the caller's array is never modified


@pytest.mark.parametrize("name", NAMES)
def test_seeding(name: str, case) -> None:
    image, mask = case
    p = PERTURBATIONS[name]
    a, params_a = p.apply(image, severity=3, seed=11, mask=mask)
    b, params_b = p.apply(image, severity=3, seed=11, mask=mask)
    c, _ = p.apply(image, severity=3, seed=12, mask=mask)
    assert np.array_equal(a, b) and params_a == params_b
    # A stochastic entry must react to the seed; a deterministic one must ignore it.
    assert np.array_equal(a, c) is (not p.stochastic)


@pytest.mark.parametrize("name", NAMES)
def test_severity_is_monotone(name: str, case) -> None:
    image, mask = case
    p = PERTURBATIONS[name]
    mad = []
    for severity in range(1, N_SEVERITIES + 1):
        out, _ = p.apply(image, severity=severity, seed=_seed(name, severity), mask=mask)
        mad.append(float(np.abs(out - image).mean()))
    assert mad[0] > 0
    assert all(later >= earlier - 1e-3 for earlier, later in zip(mad, mad[1:])), mad
    assert mad[-1] > 1.2 * mad[0], mad


@pytest.mark.parametrize("name", NAMES)
def test_params_are_json_and_name_the_level(name: str, case) -> None:
    image, mask = case
    p = PERTURBATIONS[name]
    for severity in (1, 5):
        _, params = p.apply(image, severity=severity, seed=_seed(name, severity), mask=mask)
        assert json.loads(json.dumps(params)) == params
        assert p.levels[severity - 1] in params.values()


@pytest.mark.parametrize("name", NAMES)
def test_entry_is_well_formed(name: str) -> None:
    p = PERTURBATIONS[name]
    assert isinstance(p, Perturbation) and p.name == name
    assert len(p.levels) == N_SEVERITIES and p.parameter
    assert isinstance(p.stochastic, bool)


# --- registry, seeds, errors -------------------------------------------------------------------


def test_registry_covers_the_issue() -> None:
    required = {
        "gaussian_noise", "speckle", "rician_noise", "salt_pepper", "gaussian_blur", "background_blur",
        "foreground_texture_shift", "bias_field", "gamma_contrast", "downsampling", "kspace_spike",
        "gibbs_ringing",
    }  # fmt: skip
    assert required <= set(PERTURBATIONS)
    rows = describe()
    assert [r["name"] for r in rows] == list(PERTURBATIONS)
    speckle = next(r for r in rows if r["name"] == "speckle")
    assert speckle["levels"] == [0.05, 0.1, 0.2, 0.3, 0.5]  # holds the reference study's 0.1 and 0.3
    assert json.loads(json.dumps(rows)) == rows


def test_condition_seed_is_stable_and_distinct() -> None:
    assert condition_seed(0, "case_001", "gaussian_noise", 3) == 1382545110  # fixed across processes
    seeds = {
        condition_seed(0, "case_001", "gaussian_noise", 3),
        condition_seed(0, "case_002", "gaussian_noise", 3),
        condition_seed(0, "case_001", "speckle", 3),
        condition_seed(0, "case_001", "gaussian_noise", 4),
        condition_seed(1, "case_001", "gaussian_noise", 3),
    }
    assert len(seeds) == 5
    assert all(0 <= s < 2**32 for s in seeds)


def test_unknown_name_suggests() -> None:
    with pytest.raises(SegstudyError) as err:
        get_perturbation("gausian_noise", where="study.yaml: robustness.perturbations[0]")
    text = str(err.value)
    assert text.startswith(
        "study.yaml: robustness.perturbations[0]: unknown perturbation 'gausian_noise'; did you mean 'gaussian_noise'?"
    )
    assert "Accepted: background_blur, bias_field," in text


@pytest.mark.parametrize("severity", [-1, 6, 1.5, True])
def test_bad_severity(severity) -> None:
    image, _ = textured_blob((8, 8))
    with pytest.raises(SegstudyError, match=r"severity=.* accepted: an int 0\.\.5"):
        PERTURBATIONS["gaussian_noise"].apply(image, severity=severity, seed=0)


@pytest.mark.parametrize("seed", [-1, 2**32, 1.0])
def test_bad_seed(seed) -> None:
    image, _ = textured_blob((8, 8))
    with pytest.raises(SegstudyError, match=r"seed=.* accepted: an int in \[0, 2\*\*32\)"):
        PERTURBATIONS["gaussian_noise"].apply(image, severity=1, seed=seed)


def test_bad_image_and_mask() -> None:
    image, mask = textured_blob((8, 8))
    with pytest.raises(SegstudyError, match=r"accepted: a float numpy array \(C, H, W\)"):
        PERTURBATIONS["gaussian_noise"].apply(image[0], severity=1, seed=0)
    with pytest.raises(SegstudyError, match=r"mask shape \(7, 8\) does not match"):
        PERTURBATIONS["background_blur"].apply(image, severity=1, seed=0, mask=mask[0, :7])


def test_custom_levels_are_validated_and_used() -> None:
    noise = GaussianNoise(levels=(0.01, 0.02, 0.03, 0.04, 0.3))
    _, params = noise.apply(textured_blob((8, 8))[0], severity=5, seed=0)
    assert params == {"std": 0.3}
    for bad in [(0.1, 0.2), (0.1, 0.3, 0.2, 0.4, 0.5), (-0.1, 0.1, 0.2, 0.3, 0.4)]:
        with pytest.raises(SegstudyError, match="must be 5 strictly increasing or decreasing values of std"):
            GaussianNoise(levels=bad)


def test_float64_input_keeps_dtype() -> None:
    image = textured_blob((16, 16))[0].astype(np.float64)
    out, _ = PERTURBATIONS["gaussian_blur"].apply(image, severity=2, seed=0)
    assert out.dtype == np.float64


# --- per-family physics ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["background_blur", "foreground_texture_shift"])
def test_mask_perturbations_need_the_mask(name: str) -> None:
    image, _ = textured_blob((16, 16))
    with pytest.raises(SegstudyError, match=f"perturbation '{name}' needs the foreground mask; pass mask="):
        PERTURBATIONS[name].apply(image, severity=1, seed=0)


def test_background_blur_keeps_foreground(case) -> None:
    image, mask = case
    out, params = PERTURBATIONS["background_blur"].apply(image, severity=3, seed=0, mask=mask)
    fg = np.broadcast_to(mask == 1, image.shape)
    np.testing.assert_array_equal(out[fg], image[fg])
    assert np.abs(out[~fg] - image[~fg]).mean() > 0.01
    assert params == {"sigma": 3.0}


def test_foreground_texture_shift_blends_background_into_foreground(case) -> None:
    image, mask = case
    out, params = PERTURBATIONS["foreground_texture_shift"].apply(image, severity=2, seed=0, mask=mask)
    fg = np.broadcast_to(mask == 1, image.shape)
    np.testing.assert_array_equal(out[~fg], image[~fg])
    assert params["overlap_fraction"] == 0.0  # a centred ball half the image wide can be cleared
    source = np.roll(image, params["shift"], axis=tuple(range(1, image.ndim)))
    np.testing.assert_allclose(out[fg], (0.7 * image + 0.3 * source)[fg], atol=1e-6)
    # The ball is bright (>= 0.5) and the background dark (<= 0.5): the foreground mean drops.
    assert out[fg].mean() < image[fg].mean() - 0.03


@pytest.mark.parametrize("seed", range(3))
def test_texture_perturbations_move_texture_disparity(seed: int) -> None:
    """On skip-study-like data, background blur raises TD and the texture shift lowers it (severity 5)."""
    rng = np.random.default_rng(seed)
    pair = TexturePair()
    fg, bg = (crop(texture_canvas(t, rng, size=128), rng, size=64) for t in (pair.foreground, pair.background))
    mask = random_blob_mask(rng, size=64, min_points=3, max_points=20)
    image = (mask * (0.7 * fg + 0.3 * bg) + (1 - mask) * bg).astype(np.float32)[None]
    td = texture_disparity(image, mask)
    blurred, _ = PERTURBATIONS["background_blur"].apply(image, severity=5, seed=0, mask=mask)
    shifted, _ = PERTURBATIONS["foreground_texture_shift"].apply(image, severity=5, seed=0, mask=mask)
    assert texture_disparity(blurred, mask) > td + 0.1
    assert texture_disparity(shifted, mask) < td - 0.1


def test_gaussian_noise_std_matches_level() -> None:
    image = np.full((1, 64, 64), 0.5, np.float32)
    out, _ = PERTURBATIONS["gaussian_noise"].apply(image, severity=3, seed=5)
    assert abs(float((out - image).std()) - 0.1) < 0.005


def test_speckle_scales_with_intensity() -> None:
    image = np.full((1, 64, 64), 0.5, np.float32)
    out, params = PERTURBATIONS["speckle"].apply(image, severity=2, seed=5)  # variance 0.1
    assert params == {"variance": 0.1}
    assert abs(float((out - image).std()) - 0.5 * np.sqrt(0.1)) < 0.008
    dark, _ = PERTURBATIONS["speckle"].apply(np.zeros_like(image), severity=5, seed=5)
    assert not dark.any()  # multiplicative: black stays black


def test_salt_pepper_hits_the_fraction_with_extremes(case) -> None:
    image, _ = case
    out, params = PERTURBATIONS["salt_pepper"].apply(image, severity=4, seed=5)  # 10%
    changed = out != image
    assert params["n_voxels"] == round(0.1 * image.size) and changed.sum() <= params["n_voxels"]
    assert changed.mean() > 0.09
    assert set(np.unique(out[changed])) <= {image.min(), image.max()}


def test_bias_field_mean_log_gain_matches_level(case) -> None:
    image, _ = case
    out, params = PERTURBATIONS["bias_field"].apply(image, severity=2, seed=5)
    assert abs(float(np.abs(np.log(out / image)).mean()) - 0.1) < 1e-4
    assert len(params["coefficients"]) == (10 if image.ndim == 3 else 20)  # Legendre terms of degree <= 3


def test_gamma_contrast_on_a_ramp() -> None:
    ramp = np.linspace(0.0, 1.0, 64, dtype=np.float32).reshape(1, 8, 8)
    out, params = PERTURBATIONS["gamma_contrast"].apply(ramp, severity=3, seed=0)
    assert params == {"gamma": 2.0}
    np.testing.assert_allclose(out, ramp**2, atol=1e-5)


def test_downsampling_keeps_constants_and_reports_grid(case) -> None:
    image, _ = case
    flat = np.full_like(image, 0.4)
    out, params = PERTURBATIONS["downsampling"].apply(flat, severity=2, seed=0)
    np.testing.assert_allclose(out, flat, atol=1e-6)
    assert params == {"factor": 2.0, "low_res_shape": [n // 2 for n in image.shape[1:]]}


def test_kspace_spike_amplitude_is_in_intensity_units(case) -> None:
    image, _ = case
    out, params = PERTURBATIONS["kspace_spike"].apply(image, severity=3, seed=5)  # amplitude 0.1
    assert len(params["locations"]) == 1 and len(params["locations"][0]) == image.ndim
    assert abs(float(np.abs(out - image).max()) - 0.1) < 0.015


def test_gibbs_ringing_keeps_mean() -> None:
    image, _ = textured_blob((32, 32))
    out, _ = PERTURBATIONS["gibbs_ringing"].apply(image, severity=5, seed=0)
    # Truncating k-space keeps the DC term: same mean, lost detail.
    assert abs(float(out.mean() - image.mean())) < 1e-5
    assert np.abs(out - image).mean() > 0.02
