"""Patch sampling and sliding-window inference (3D context study)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.networks.nets import UNet

from study.training.inputs.patches import fbr, foreground_fraction, sample_patches, sliding_window_probabilities


def known_volume() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = rng.random((1, 48, 48, 48)).astype(np.float32)
    mask = np.zeros((1, 48, 48, 48), dtype=np.uint8)
    mask[:, 16:28, 16:28, 16:28] = 1  # a 12^3 cube: 1728 of 110592 voxels
    return image, mask


@pytest.mark.parametrize("pos_fraction", [0.0, 0.25, 0.5, 0.9, 1.0])
def test_share_of_foreground_centred_crops_matches_pos_fraction(pos_fraction):
    image, mask = known_volume()
    _, masks = sample_patches(image, mask, patch_size=16, pos_fraction=pos_fraction, num_samples=400, seed=3)
    centred = masks[:, 0, 8, 8, 8].mean()  # label at the crop centre voxel
    assert centred == pytest.approx(pos_fraction, abs=0.06)


def test_crops_keep_image_and_label_aligned_and_are_seeded():
    image, mask = known_volume()
    x, y = sample_patches(mask.astype(np.float32), mask, patch_size=16, pos_fraction=0.5, num_samples=20, seed=1)
    assert x.shape == (20, 1, 16, 16, 16) and y.dtype == np.uint8
    assert np.array_equal(x.astype(np.uint8), y)
    x2, _ = sample_patches(mask.astype(np.float32), mask, patch_size=16, pos_fraction=0.5, num_samples=20, seed=1)
    x3, _ = sample_patches(mask.astype(np.float32), mask, patch_size=16, pos_fraction=0.5, num_samples=20, seed=2)
    assert np.array_equal(x, x2) and not np.array_equal(x, x3)


def test_patch_larger_than_volume_is_padded():
    image, mask = known_volume()
    x, y = sample_patches(image[:, :20, :20, :20], mask[:, :20, :20, :20], patch_size=32, pos_fraction=1.0,
                          num_samples=2, seed=0)
    assert x.shape == (1, 1, 32, 32, 32)  # padded to the patch: one possible crop, taken once
    np.testing.assert_array_equal(x[0, :, 6:26, 6:26, 6:26], image[:, :20, :20, :20])  # padded evenly


def test_foreground_fraction_and_fbr():
    masks = np.zeros((2, 1, 4, 4, 4), dtype=np.uint8)
    masks[0, :, :2] = 1  # half
    assert foreground_fraction(masks).tolist() == [0.5, 0.0]
    assert fbr(masks).tolist() == [1.0, 0.0]


@pytest.mark.parametrize(("shape", "patch"), [((37, 29, 40), 16), ((50, 50, 50), 32), ((20, 33, 17), 16)])
def test_sliding_window_output_shape_equals_input_shape(shape, patch):
    torch.manual_seed(0)
    net = UNet(spatial_dims=3, in_channels=1, out_channels=1, channels=(4, 8), strides=(2,))
    volume = np.random.default_rng(0).random((1, *shape)).astype(np.float32)
    out = sliding_window_probabilities(net, volume, patch_size=patch, sw_batch_size=4, overlap=0.25,
                                       device=torch.device("cpu"))
    assert out.shape == (1, *shape)
    assert 0.0 <= out.min() and out.max() <= 1.0


def test_a_patch_covering_the_volume_is_taken_once():
    """Four copies of the one possible crop would cost four samples' compute and teach nothing more."""
    image, mask = known_volume()
    images, masks = sample_patches(image, mask, patch_size=48, pos_fraction=0.5, num_samples=4, seed=0)
    assert images.shape == (1, 1, 48, 48, 48)
    np.testing.assert_array_equal(images[0], image)
    np.testing.assert_array_equal(masks[0], mask)
    smaller, _ = sample_patches(image, mask, patch_size=32, pos_fraction=0.5, num_samples=4, seed=0)
    assert smaller.shape[0] == 4


READ_ONLY = """
import warnings
import numpy as np
from study.training.inputs.patches import sample_patches
image = np.random.default_rng(0).random((1, 32, 32, 32)).astype(np.float32)
mask = (image > 0.5).astype(np.uint8)
expected = sample_patches(image, mask, patch_size=16, pos_fraction=0.5, num_samples=3, seed=1)
image.flags.writeable = False
mask.flags.writeable = False
with warnings.catch_warnings():
    warnings.simplefilter("error")
    got = sample_patches(image, mask, patch_size=16, pos_fraction=0.5, num_samples=3, seed=1)
for a, b in zip(expected, got):
    np.testing.assert_array_equal(a, b)
"""


def test_read_only_volumes_from_the_object_store_are_cropped_without_a_warning():
    """In a fresh process: torch warns about non-writable arrays only once per process."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", READ_ONLY], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-1500:]


@pytest.mark.parametrize("n, batch", [(7, 3), (6, 3), (1, 4)])
def test_steps_per_epoch_counts_the_batches_each_strategy_yields(n, batch):
    """A per-step learning-rate schedule is sized from `steps`: it must be what `batches` yields."""
    from study.data import Split
    from study.training.inputs.strategies import Patches, WholeImages

    image, mask = known_volume()
    split = Split(np.stack([image] * n), np.stack([mask] * n), tuple(f"v{i}" for i in range(n)), np.full(n, np.nan), (1.0, 1.0, 1.0))
    rng = np.random.default_rng(0)
    for inputs in (WholeImages(batch_size=batch),
                   Patches(batch_size=batch, patch_size=16, pos_fraction=0.5, samples_per_volume=2, sw_batch_size=1, overlap=0.25)):
        assert inputs.steps(split) == len(list(inputs.batches(split, rng))) == -(-n // batch)
