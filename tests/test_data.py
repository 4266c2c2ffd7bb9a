"""Synthetic 2D dataset, texture disparity, the dataset registry and export."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from study.data import DATASETS, LevelData, Synthetic2DConfig, build_synthetic2d, get_dataset, texture_disparity
from study.data.base import SplitConfig, split_sizes
from study.data.export import export_level
from study.data.synthetic2d import _canvases
from study.data.textures import TEXTURES, TexturePair, TextureSpec
from study.errors import SegstudyError

SMALL = Synthetic2DConfig(image_size=32, n_images=10, seed=3)
ALPHAS = [0.1, 0.3, 0.5, 0.7, 0.9]


def _splits(level: LevelData):
    return dict(level.named_splits())


@pytest.fixture(scope="module")
def default_levels() -> dict[float, LevelData]:
    """The default config (100 images, 64x64) at every alpha of the reference study."""
    cfg = Synthetic2DConfig()
    return {a: build_synthetic2d(cfg, alpha=a) for a in ALPHAS}


# --- determinism and pairing -------------------------------------------------------------


def test_same_config_and_alpha_is_bit_identical():
    a, b = build_synthetic2d(SMALL, alpha=0.4), build_synthetic2d(SMALL, alpha=0.4)
    for name, split in _splits(a).items():
        other = _splits(b)[name]
        assert split.ids == other.ids
        np.testing.assert_array_equal(split.images, other.images)
        np.testing.assert_array_equal(split.masks, other.masks)
        np.testing.assert_array_equal(split.td, other.td)


def test_another_seed_gives_other_data():
    a = build_synthetic2d(SMALL, alpha=0.4)
    b = build_synthetic2d(SMALL.model_copy(update={"seed": 4}), alpha=0.4)
    all_a = np.concatenate([s.masks for _, s in a.named_splits()])
    all_b = np.concatenate([s.masks for _, s in b.named_splits()])
    assert not np.array_equal(all_a, all_b)
    assert not np.array_equal(a.train.images, b.train.images)


def test_masks_and_splits_do_not_depend_on_alpha(default_levels):
    ref = default_levels[0.1]
    for alpha, level in default_levels.items():
        for name, split in _splits(level).items():
            assert split.ids == _splits(ref)[name].ids
            np.testing.assert_array_equal(split.masks, _splits(ref)[name].masks)
    # Only the foreground blend changes: the background pixels are the same texture.
    bg = ref.test.masks == 0
    np.testing.assert_array_equal(default_levels[0.9].test.images[bg], ref.test.images[bg])
    assert not np.array_equal(default_levels[0.9].test.images, ref.test.images)


def test_image_does_not_depend_on_dataset_size():
    small = build_synthetic2d(SMALL, alpha=0.2)
    bigger = build_synthetic2d(SMALL.model_copy(update={"n_images": 20}), alpha=0.2)
    by_id = {i: m for s in _splits(bigger).values() for i, m in zip(s.ids, s.masks)}
    for split in _splits(small).values():
        for image_id, mask in zip(split.ids, split.masks):
            np.testing.assert_array_equal(mask, by_id[image_id])


# --- texture disparity tracks alpha --------------------------------------------------------


def test_mean_test_td_decreases_strictly_with_alpha(default_levels):
    means = [float(np.mean(default_levels[a].test.td)) for a in ALPHAS]
    assert all(np.isfinite(means))
    assert all(x > y for x, y in zip(means, means[1:])), means
    assert means[-1] < 0.5 * means[0], means


def test_td_identical_texture_is_near_zero():
    rng = np.random.default_rng(0)
    texture = TEXTURES["bandpass_noise"](rng, size=128, frequency=0.2)
    mask = np.zeros((128, 128), dtype=np.uint8)
    mask[:, :64] = 1
    assert abs(texture_disparity(texture, mask)) < 0.05


def test_td_very_different_textures_is_large():
    rng = np.random.default_rng(0)
    fine = rng.random((128, 128))
    coarse = TEXTURES["grating"](rng, size=128, frequency=0.05)
    mask = np.zeros((128, 128), dtype=np.uint8)
    mask[32:96, 32:96] = 1
    image = np.where(mask == 1, fine, coarse)
    td = texture_disparity(image, mask)
    assert td > 0.5
    # Channel-first input gives the same value.
    assert texture_disparity(image[None], mask[None]) == td


def test_td_is_nan_for_empty_or_full_mask():
    image = np.random.default_rng(0).random((32, 32))
    assert np.isnan(texture_disparity(image, np.zeros((32, 32), np.uint8)))
    assert np.isnan(texture_disparity(image, np.ones((32, 32), np.uint8)))


def test_td_from_cached_lbp_codes_is_the_uncached_value_and_the_cache_keeps_its_budget(monkeypatch):
    """The LBP codes are kept per image (a trial measures the same images again and again): a value
    from the cache is the one computed afresh, a changed image is a new entry, and the cache drops
    its oldest entries past its byte budget."""
    import sys

    from skimage.feature import local_binary_pattern

    module = sys.modules["study.data.texture_disparity"]
    monkeypatch.setattr(module, "_CODES", type(module._CODES)())
    monkeypatch.setattr(module, "_CODES_BYTES", 0)
    monkeypatch.setattr(module, "CODES_BUDGET", 10 * 2 * 32 * 32)  # ten 32 x 32 images and their codes
    rng = np.random.default_rng(3)
    images = [rng.random((32, 32)) for _ in range(12)]
    mask = np.zeros((32, 32), np.uint8)
    mask[8:20, 4:30] = 1

    def afresh(image: np.ndarray) -> float:
        codes = local_binary_pattern(np.round(image * 255).astype(np.uint8), 24, 3, method="uniform").astype(np.int64)
        p, q = (np.bincount(codes[sel], minlength=26) / sel.sum() for sel in (mask == 1, mask == 0))
        both = (p > 0) & (q > 0)
        return float(np.sum(p[both] * np.log2(p[both] / q[both])))

    first = [texture_disparity(image, mask) for image in images]
    assert first == [afresh(image) for image in images]
    assert [texture_disparity(image, mask) for image in images] == first  # the last ten from the cache
    assert len(module._CODES) == 10 and module._CODES_BYTES == 10 * 2 * 32 * 32
    changed = images[-1].copy()
    changed[0, 0] = 1.0 - changed[0, 0]
    assert texture_disparity(changed, mask) == afresh(changed)


def test_textures_are_normalised_and_seeded():
    for name, make in TEXTURES.items():
        a = make(np.random.default_rng(1), size=48, frequency=0.1)
        b = make(np.random.default_rng(1), size=48, frequency=0.1)
        assert a.shape == (48, 48), name
        assert a.min() == 0.0 and a.max() == 1.0, name
        np.testing.assert_array_equal(a, b)



# --- one texture pair per dataset (the reference design) ------------------------------------


def _offset_in(canvas: np.ndarray, image: np.ndarray, where: np.ndarray) -> tuple[int, int] | None:
    """The (y, x) at which `image` equals a crop of `canvas` on the pixels `where`, if any."""
    size = image.shape[0]
    for y in range(canvas.shape[0] - size + 1):
        for x in range(canvas.shape[1] - size + 1):
            if np.allclose(canvas[y : y + size, x : x + size][where], image[where], atol=1e-6):
                return y, x
    return None


def test_every_image_crops_the_same_two_textures():
    """At alpha 0 the foreground of EVERY image is a crop of one canvas and the background of
    another: a texture is foreground in all images or in none (a texture pair drawn per image,
    the old design, made foreground and background indistinguishable across images)."""
    cfg = SMALL.model_copy(update={"n_images": 8})
    level = build_synthetic2d(cfg, alpha=0.0)
    fg_canvas, bg_canvas = _canvases(cfg)
    offsets = []
    for _, split in level.named_splits():
        for image, mask in zip(split.images[:, 0], split.masks[:, 0].astype(bool)):
            fg_at = _offset_in(fg_canvas.astype(np.float32), image, mask)
            assert fg_at is not None, "foreground is not a crop of the dataset's foreground texture"
            assert _offset_in(bg_canvas.astype(np.float32), image, ~mask) is not None
            assert _offset_in(bg_canvas.astype(np.float32), image, mask) is None  # and not of the other one
            offsets.append(fg_at)
    assert len(set(offsets)) > len(offsets) // 2  # images differ in texture offset (phase), not in texture


def test_textures_come_from_the_spec():
    swapped = SMALL.model_copy(
        update={"textures": TexturePair(foreground=SMALL.textures.background, background=SMALL.textures.foreground)}
    )
    a, b = build_synthetic2d(SMALL, alpha=0.0), build_synthetic2d(swapped, alpha=0.0)
    np.testing.assert_array_equal(a.train.masks, b.train.masks)
    assert not np.array_equal(a.train.images, b.train.images)


def test_unknown_texture_family_says_what_is_accepted():
    with pytest.raises(ValidationError, match="unknown texture 'gratin'; did you mean 'grating'"):
        TextureSpec(family="gratin", frequency=0.1)
    with pytest.raises(ValidationError, match="frequency"):
        TextureSpec(family="grating", frequency=0.9)


# --- shapes, dtypes, splits, validation ----------------------------------------------------


def test_shapes_dtypes_split_sizes_and_nonempty_masks(default_levels):
    level = default_levels[0.5]
    sizes = {name: len(s) for name, s in _splits(level).items()}
    assert sizes == {"train": 60, "val": 10, "calib": 10, "test": 20}
    all_ids = [i for s in _splits(level).values() for i in s.ids]
    assert sorted(all_ids) == [f"img{i:04d}" for i in range(100)]
    for split in _splits(level).values():
        n = len(split)
        assert split.images.shape == (n, 1, 64, 64) and split.images.dtype == np.float32
        assert split.masks.shape == (n, 1, 64, 64) and split.masks.dtype == np.uint8
        assert split.td.shape == (n,) and split.td.dtype == np.float64
        assert split.spacing == (1.0, 1.0)
        assert set(np.unique(split.masks)) == {0, 1}
        assert split.masks.reshape(n, -1).sum(axis=1).min() > 0
        assert split.images.min() >= 0.0 and split.images.max() <= 1.0


def test_split_sizes_keep_one_image_per_split():
    assert split_sizes(100, SplitConfig()) == (60, 10, 10, 20)
    assert split_sizes(5, SplitConfig()) == (2, 1, 1, 1)
    assert split_sizes(5, SplitConfig(train=0.02, val=0.02, calib=0.02, test=0.94)) == (1, 1, 1, 2)
    assert split_sizes(4, SplitConfig(train=0.1, val=0.1, calib=0.1, test=0.7)) == (1, 1, 1, 1)


@pytest.mark.parametrize("alpha", [-0.1, 1.0, 1.5, float("nan"), True, "0.5"])
def test_alpha_out_of_range_raises(alpha):
    with pytest.raises(SegstudyError, match=r"alpha.*\[0, 1\)"):
        build_synthetic2d(SMALL, alpha=alpha)


@pytest.mark.parametrize(
    "update, message",
    [
        ({"split": {"train": 0.7, "val": 0.1, "test": 0.3}}, "must sum to 1"),
        ({"split": {"train": 0.9, "val": 0.0, "test": 0.1}}, "greater than 0"),
        ({"min_points": 10, "max_points": 5}, "min_points"),
        ({"image_size": 8}, "greater than or equal to 16"),
        ({"n_images": 2}, "greater than or equal to 5"),
        ({"spacing": 0}, "greater than 0"),
        ({"colour": "red"}, "Extra inputs"),
    ],
)
def test_bad_config_gives_clear_pydantic_error(update, message):
    with pytest.raises(ValidationError, match=message):
        Synthetic2DConfig.model_validate(update)


def test_config_is_frozen():
    with pytest.raises(ValidationError):
        SMALL.seed = 1  # type: ignore[misc]


# --- registry ------------------------------------------------------------------------------


def test_registry_entry_builds_and_checks_factors():
    entry = get_dataset("synthetic2d")
    assert entry is DATASETS["synthetic2d"]
    assert entry.factors["alpha"](0.3) is None
    assert entry.factors["alpha"](1.0) == "must be a number in [0, 1)"
    level = entry.build(entry.config(image_size=16, n_images=5), alpha=0.3)
    assert sum(len(s) for _, s in level.named_splits()) == 5


def test_unknown_dataset_suggests_a_name():
    with pytest.raises(SegstudyError, match="unknown dataset 'synthetc2d'; did you mean 'synthetic2d'"):
        get_dataset("synthetc2d")


# --- export --------------------------------------------------------------------------------


def test_export_png_reads_back(tmp_path: Path):
    level = build_synthetic2d(SMALL, alpha=0.3)
    paths = export_level(level, tmp_path, fmt="png")
    assert len(paths) == 2 * 10 + 1
    image_id = level.test.ids[0]
    img = np.asarray(Image.open(tmp_path / "test" / f"{image_id}_image.png"))
    mask = np.asarray(Image.open(tmp_path / "test" / f"{image_id}_mask.png"))
    assert img.shape == (32, 32) and img.dtype == np.uint8
    np.testing.assert_array_equal(img, np.round(level.test.images[0, 0] * 255).astype(np.uint8))
    np.testing.assert_array_equal(mask, level.test.masks[0, 0] * 255)
    with (tmp_path / "manifest.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 10 and list(rows[0]) == ["id", "split", "td", "foreground_fraction"]
    row = next(r for r in rows if r["id"] == image_id)
    assert row["split"] == "test"
    assert float(row["td"]) == pytest.approx(level.test.td[0])
    assert float(row["foreground_fraction"]) == pytest.approx(level.test.masks[0].mean())


def test_export_nifti_reads_back_with_shape_and_affine(tmp_path: Path):
    level = build_synthetic2d(SMALL.model_copy(update={"spacing": 0.5}), alpha=0.3)
    export_level(level, tmp_path, fmt="nifti")
    image_id = level.train.ids[1]
    img = nib.load(tmp_path / "train" / f"{image_id}_image.nii.gz")
    mask = nib.load(tmp_path / "train" / f"{image_id}_mask.nii.gz")
    assert img.shape == (32, 32, 1) and mask.shape == (32, 32, 1)
    np.testing.assert_allclose(img.affine, np.diag([0.5, 0.5, 1.0, 1.0]))
    np.testing.assert_array_equal(np.asarray(img.dataobj)[:, :, 0], level.train.images[1, 0])
    np.testing.assert_array_equal(np.asarray(mask.dataobj)[:, :, 0], level.train.masks[1, 0])


def test_export_unknown_format_names_accepted(tmp_path: Path):
    level = build_synthetic2d(SMALL, alpha=0.3)
    with pytest.raises(SegstudyError, match="'tiff'.*accepted: png, nifti"):
        export_level(level, tmp_path, fmt="tiff")


def test_placement_anywhere_moves_the_same_blob_inside_the_image_and_keeps_the_pairing():
    from study.data.synthetic2d import Synthetic2DConfig, build_synthetic2d

    centred = build_synthetic2d(Synthetic2DConfig(image_size=32, n_images=40, seed=2), alpha=0.3)
    moved = build_synthetic2d(Synthetic2DConfig(image_size=32, n_images=40, seed=2, placement="anywhere"), alpha=0.3)
    again = build_synthetic2d(Synthetic2DConfig(image_size=32, n_images=40, seed=2, placement="anywhere"), alpha=0.7)
    assert moved.test.ids == centred.test.ids  # the same split
    assert (moved.test.masks.sum(axis=(1, 2, 3)) == centred.test.masks.sum(axis=(1, 2, 3))).all()  # same blobs, moved
    assert (moved.test.masks == again.test.masks).all()  # every alpha sees the same masks: comparisons stay paired
    spread = [np.array([np.argwhere(m[0]).mean(axis=0) for m in level.train.masks]).std(axis=0) for level in (centred, moved)]
    assert (spread[1] > 2 * spread[0]).all()  # the blobs' centres spread over the image, not its middle
