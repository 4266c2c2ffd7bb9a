"""Synthetic 3D blob volumes: determinism, shapes, FBR ranges, volume-size FBR shift, config errors."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError
from scipy.ndimage import label as connected_components

from study.data import DATASETS, LevelData, Synthetic3DConfig, build_synthetic3d

SMALL = Synthetic3DConfig(
    volume_size=32, n_train=6, n_val=2, n_test=10, train_radius=(6.0, 8.0), test_radius=(2.0, 12.0), seed=5
)


def _splits(level: LevelData):
    return {"train": level.train, "val": level.val, "test": level.test}


@pytest.fixture(scope="module")
def small() -> LevelData:
    return build_synthetic3d(SMALL)


@pytest.fixture(scope="module")
def default_level() -> LevelData:
    """The default config: 64^3 volumes, 16 train, 4 val, 20 test."""
    return build_synthetic3d(Synthetic3DConfig())


# --- determinism and pairing -------------------------------------------------------------


def test_same_seed_is_bit_identical(small):
    again = build_synthetic3d(SMALL)
    for name, split in _splits(small).items():
        other = _splits(again)[name]
        assert split.ids == other.ids
        np.testing.assert_array_equal(split.images, other.images)
        np.testing.assert_array_equal(split.masks, other.masks)


def test_other_seed_differs(small):
    other = build_synthetic3d(SMALL.model_copy(update={"seed": 6}))
    for name, split in _splits(small).items():
        assert not np.array_equal(split.masks, _splits(other)[name].masks)
        assert not np.array_equal(split.images, _splits(other)[name].images)


def test_volume_does_not_depend_on_split_size(small):
    fewer = build_synthetic3d(SMALL.model_copy(update={"n_train": 3, "n_test": 4}))
    np.testing.assert_array_equal(fewer.train.images, small.train.images[:3])
    np.testing.assert_array_equal(fewer.test.masks, small.test.masks[:4])
    np.testing.assert_array_equal(fewer.val.images, small.val.images)


# --- shapes, dtypes, content -------------------------------------------------------------


def test_shapes_dtypes_ids_and_nonempty_masks(small):
    sizes = {"train": 6, "val": 2, "test": 10}
    for name, split in _splits(small).items():
        n = sizes[name]
        assert split.stacked
        assert split.images.shape == (n, 1, 32, 32, 32) and split.images.dtype == np.float32
        assert split.masks.shape == (n, 1, 32, 32, 32) and split.masks.dtype == np.uint8
        assert set(np.unique(split.masks)) == {0, 1}
        assert split.masks.reshape(n, -1).any(axis=1).all()
        assert 0.0 <= split.images.min() and split.images.max() <= 1.0
        assert np.isnan(split.td).all() and split.td.shape == (n,)
        assert split.spacing == (1.0, 1.0, 1.0)
        assert split.fbr.shape == (n,) and (split.fbr > 0).all()
    assert small.train.ids[:2] == ("train0000", "train0001")
    assert small.test.ids[0] == "test0000_s32"
    image, mask = small.train.volume(1)
    assert image.shape == mask.shape == (1, 32, 32, 32)


def test_foreground_and_background_are_textured_with_the_configured_means(default_level):
    images, masks = default_level.train.images, default_level.train.masks.astype(bool)
    inside, outside = images[masks], images[~masks]
    assert inside.mean() == pytest.approx(0.7, abs=0.02)
    assert outside.mean() == pytest.approx(0.3, abs=0.02)
    # Not flat: texture (0.08) and noise (0.1 / 0.15) add up in quadrature.
    assert inside.std() == pytest.approx(np.hypot(0.08, 0.1), rel=0.25)
    assert outside.std() == pytest.approx(np.hypot(0.08, 0.15), rel=0.25)


def test_sphere_without_jitter_is_an_exact_ball():
    cfg = Synthetic3DConfig(
        volume_size=24, n_train=2, n_val=1, n_test=1, train_radius=(5.0, 5.0), test_radius=(5.0, 5.0),
        shape_jitter=0.0, roughness=0.0,
    )
    offsets = np.mgrid[-5:6, -5:6, -5:6]
    ball = int((np.sqrt((offsets**2).sum(axis=0)) < 5.0).sum())
    level = build_synthetic3d(cfg)
    assert [int(m.sum()) for m in level.train.masks] == [ball, ball]


def test_n_blobs_places_several_objects():
    cfg = Synthetic3DConfig(
        volume_size=48, n_train=6, n_val=1, n_test=1, n_blobs=(3, 3), train_radius=(3.0, 4.0), test_radius=(3.0, 4.0)
    )
    counts = [connected_components(m[0])[1] for m in build_synthetic3d(cfg).train.masks]
    assert max(counts) == 3 and min(counts) >= 1


# --- foreground-to-background ratio --------------------------------------------------------


def test_test_fbr_range_is_wider_than_train(small, default_level):
    for level in (small, default_level):
        train = np.concatenate([level.train.fbr, level.val.fbr])
        assert level.test.fbr.min() < train.min()
        assert level.test.fbr.max() > train.max()
    # The defaults span more than two orders of magnitude at test.
    assert default_level.test.fbr.max() / default_level.test.fbr.min() > 100


def test_test_volume_sizes_shift_fbr_for_the_same_object():
    cfg = SMALL.model_copy(update={"test_volume_sizes": [32, 48], "test_radius": (6.0, 6.0), "n_test": 3})
    test = build_synthetic3d(Synthetic3DConfig.model_validate(cfg.model_dump())).test
    assert not test.stacked and len(test) == 6
    assert test.ids[:2] == ("test0000_s32", "test0000_s48")
    for i in range(0, 6, 2):
        (_, small_mask), (_, large_mask) = test.volume(i), test.volume(i + 1)
        assert small_mask.shape == (1, 32, 32, 32) and large_mask.shape == (1, 48, 48, 48)
        fg = int(small_mask.sum())
        assert int(large_mask.sum()) == fg  # the same object, voxel for voxel
        assert test.fbr[i] == pytest.approx(fg / (32**3 - fg))
        assert test.fbr[i + 1] == pytest.approx(fg / (48**3 - fg))
        assert test.fbr[i] > 3 * test.fbr[i + 1]


# --- config errors and registry ------------------------------------------------------------


@pytest.mark.parametrize(
    ("update", "message"),
    [
        ({"n_blobs": (2, 1)}, "n_blobs"),
        ({"n_blobs": (0, 1)}, "1 <= min <= max"),
        ({"train_radius": (8.0, 6.0)}, "0 < lo <= hi"),
        ({"test_radius": (0.0, 6.0)}, "0 < lo <= hi"),
        ({"volume_size": 32}, "upper radius 18.0 does not fit a 32-voxel volume"),
        ({"test_radius": (4.0, 30.0)}, "accepted: at most 25.62"),
        ({"test_volume_sizes": [64, 24]}, "upper radius 24.0 does not fit a 24-voxel volume"),
        ({"test_volume_sizes": [64, 8]}, "distinct sizes from 16 to 512"),
        ({"test_volume_sizes": [64, 64]}, "distinct sizes from 16 to 512"),
        ({"test_volume_sizes": []}, "test_volume_sizes"),
        ({"volume_size": 8}, "volume_size"),
        ({"n_test": 0}, "n_test"),
        ({"roughness": 0.9}, "roughness"),
        ({"foreground": {"mean": 1.5}}, "foreground.mean"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_config_is_rejected(update, message):
    raw = {**Synthetic3DConfig().model_dump(), **update}
    with pytest.raises(ValidationError, match=message.replace("(", r"\(")):
        Synthetic3DConfig.model_validate(raw)


def test_registry_entry_builds_without_factors():
    entry = DATASETS["synthetic3d"]
    assert entry.factors == {} and entry.config is Synthetic3DConfig
    cfg = entry.config(volume_size=16, n_train=1, n_val=1, n_test=1, train_radius=(3, 4), test_radius=(2, 5))
    assert cfg.spatial_dims == 3
    level = entry.build(cfg)
    assert level.train.images.shape == (1, 1, 16, 16, 16)
