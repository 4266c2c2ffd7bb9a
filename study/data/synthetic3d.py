"""Seeded synthetic 3D blob volumes for the context-vs-foreground-ratio study (docs/ARCHITECTURE.md 4.2).

Each volume holds one or more smooth, slightly irregular ellipsoids ("blobs") with a textured,
noisy foreground on a textured, noisy background. Train and validation blobs draw their radius
from a narrow range (`train_radius`); test blobs from a wide one (`test_radius`), so the test
set's foreground-to-background ratio (FBR) reaches below and above what training saw.

FBR without the object-size confound: with several `test_volume_sizes`, every test object is
drawn once (radius, shape, boundary) and placed in a volume of each size, so FBR changes while
the object stays the same voxel for voxel. Ids are "test0003_s64" (object 3, 64^3 volume).

Pairing: volume `i` of a split comes from generators seeded by (seed, split, i) alone (plus the
volume size for the textures), never from how many volumes came before. The data consume no
study factors, so one build serves every cell and all arms see the same test volumes.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import ConfigDict, Field, ValidationInfo, field_validator
from scipy.ndimage import zoom

from study.strict import StrictModel
from study.data.base import DatasetConfig, LevelData, Split, pack_volumes

# Stream tags keep the generators of the splits apart for the same seed.
_STREAMS = {"train": 1, "val": 2, "test": 3, "calib": 4}
_TEXTURE_CELL = 8  # voxels between the random nodes of a smooth texture field
_BOUNDARY_NODES = 5  # random nodes per axis of a blob's boundary-wobble field


class Intensity(StrictModel):
    """Intensity model of one region: mean + texture * smooth field + noise * white noise."""

    mean: float = Field(ge=0, le=1)
    texture: float = Field(0.08, ge=0, description="std of a smooth random field (~8-voxel features)")
    noise: float = Field(0.1, ge=0, description="std of per-voxel Gaussian noise")


class Synthetic3DConfig(DatasetConfig):
    """The `data:` section of a spec for the synthetic 3D blob dataset.

    Radii are in voxels; each blob's semi-axes are radius * [1 - shape_jitter, 1 + shape_jitter]
    and its boundary wobbles by up to `roughness` of that, so a blob spans at most
    2 * radius * (1 + shape_jitter) * (1 + roughness) + 1 voxels, which must fit the volume.
    """

    # Defaults are validated too: the default radii must still fit a smaller volume_size.
    model_config = ConfigDict(validate_default=True)

    dataset: Literal["synthetic3d"] = "synthetic3d"
    volume_size: int = Field(64, ge=16, le=512, description="train/val volumes are volume_size^3")
    test_volume_sizes: list[int] | None = Field(None, min_length=1, description="default [volume_size]")
    n_train: int = Field(16, ge=1, le=10_000)
    n_val: int = Field(4, ge=1, le=10_000)
    n_calib: int = Field(
        8, ge=1, description="calibration objects, drawn like the test objects (conformal bounds need exchangeability)"
    )
    n_test: int = Field(20, ge=1, le=10_000, description="test objects; each is placed in every test volume size")
    n_blobs: tuple[int, int] = (1, 1)
    # Declared before the radii: the radius checks read them (pydantic validates in field order).
    shape_jitter: float = Field(0.1, ge=0, le=0.5)
    roughness: float = Field(0.1, ge=0, le=0.5)
    train_radius: tuple[float, float] = (14.0, 18.0)
    test_radius: tuple[float, float] = (4.0, 24.0)
    foreground: Intensity = Intensity(mean=0.7, texture=0.08, noise=0.1)
    background: Intensity = Intensity(mean=0.3, texture=0.08, noise=0.15)
    spacing: float = Field(1.0, gt=0)
    seed: int = Field(0, ge=0)

    @property
    def spatial_dims(self) -> int:
        return 3

    @property
    def image_size(self) -> int | None:
        """None: 3D studies train on patches, which set the network input size."""
        return None

    @property
    def test_sizes(self) -> list[int]:
        """The test volume sizes, defaulting to `volume_size`."""
        return list(self.test_volume_sizes or [self.volume_size])

    @field_validator("n_blobs")
    @classmethod
    def _blob_range(cls, v: tuple[int, int]) -> tuple[int, int]:
        if not 1 <= v[0] <= v[1]:
            raise ValueError(f"must be [min, max] with 1 <= min <= max, got [{v[0]}, {v[1]}]")
        return v

    @field_validator("test_volume_sizes")
    @classmethod
    def _sizes(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (min(v) < 16 or max(v) > 512 or len(set(v)) != len(v)):
            raise ValueError(f"must be distinct sizes from 16 to 512, got {v}")
        return v

    @field_validator("train_radius", "test_radius")
    @classmethod
    def _radius_fits(cls, v: tuple[float, float], info: ValidationInfo) -> tuple[float, float]:
        lo, hi = v
        if not 0 < lo <= hi:
            raise ValueError(f"must be [lo, hi] with 0 < lo <= hi, got [{lo}, {hi}]")
        data = info.data
        if not {"volume_size", "test_volume_sizes", "shape_jitter", "roughness"} <= data.keys():
            return v  # an earlier field failed and reports its own error
        size = data["volume_size"]
        if info.field_name == "test_radius" and data["test_volume_sizes"]:
            size = min(data["test_volume_sizes"])  # the smallest test volume must hold the largest blob
        largest = _max_radius(size, data["shape_jitter"], data["roughness"])
        if hi > largest:
            raise ValueError(
                f"upper radius {hi} does not fit a {size}-voxel volume with shape_jitter "
                f"{data['shape_jitter']} and roughness {data['roughness']}; accepted: at most {largest:.4g}"
            )
        return v


def build_synthetic3d(cfg: Synthetic3DConfig) -> LevelData:
    """Build the train/val/calib/test volumes of the synthetic 3D dataset (consumes no study factors).

    Args:
        cfg: dataset settings; the only input.

    Returns:
        LevelData of float32 images and uint8 non-empty masks, shape (N, 1, S, S, S) per split
        when all volumes share a size; the test split is a tuple of per-volume (1, S, S, S)
        arrays when `test_volume_sizes` lists several sizes. td is NaN (not defined in 3D);
        spacing is (cfg.spacing,) * 3.

    Example:
        >>> level = build_synthetic3d(Synthetic3DConfig(volume_size=32, train_radius=(6, 8), test_radius=(2, 12)))
        >>> level.train.images.shape, level.test.fbr.min() < level.train.fbr.min()
        ((16, 1, 32, 32, 32), True)
    """
    train = _split(cfg, "train", cfg.n_train, [cfg.volume_size], cfg.train_radius)
    val = _split(cfg, "val", cfg.n_val, [cfg.volume_size], cfg.train_radius)
    calib = _split(cfg, "calib", cfg.n_calib, cfg.test_sizes, cfg.test_radius)
    test = _split(cfg, "test", cfg.n_test, cfg.test_sizes, cfg.test_radius)
    return LevelData(train=train, val=val, calib=calib, test=test)


def _split(cfg: Synthetic3DConfig, name: str, n: int, sizes: list[int], radius: tuple[float, float]) -> Split:
    """`n` objects of one split, each rendered in a volume of every size in `sizes`."""
    images, masks, ids = [], [], []
    for i in range(n):
        for size in sizes:
            image, mask = _make_volume(cfg, _STREAMS[name], i, size, radius)
            images.append(image[None])
            masks.append(mask[None])
            ids.append(f"{name}{i:04d}" + (f"_s{size}" if name in ("calib", "test") else ""))
    return Split(
        images=pack_volumes(images),
        masks=pack_volumes(masks),
        ids=tuple(ids),
        td=np.full(len(ids), np.nan),
        spacing=(float(cfg.spacing),) * 3,
    )


def _make_volume(
    cfg: Synthetic3DConfig, stream: int, index: int, size: int, radius: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Image (float32) and mask (uint8) of object `index` in a size^3 volume.

    The blobs come from a generator seeded without `size`, so one object is identical in every
    test volume size; only its position and the textures depend on the size.
    """
    shape_rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, stream, index]))
    texture_rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, stream, index, size]))
    mask = np.zeros((size,) * 3, dtype=np.uint8)
    for _ in range(int(shape_rng.integers(cfg.n_blobs[0], cfg.n_blobs[1] + 1))):
        r = float(shape_rng.uniform(*radius))
        blob = _blob(shape_rng, radius=r, jitter=cfg.shape_jitter, roughness=cfg.roughness)
        half = blob.shape[0] // 2
        # Integer centre drawn as a fraction of the free range: the whole blob box lies inside.
        centre = half + np.rint(shape_rng.uniform(size=3) * (size - 1 - 2 * half)).astype(int)
        box = tuple(slice(c - half, c + half + 1) for c in centre)
        mask[box] |= blob
    noise = texture_rng.standard_normal(mask.shape, dtype=np.float32)
    fg, bg = cfg.foreground, cfg.background
    inside = fg.mean + fg.texture * _smooth_field(texture_rng, size) + fg.noise * noise
    outside = bg.mean + bg.texture * _smooth_field(texture_rng, size) + bg.noise * noise
    image = np.clip(np.where(mask == 1, inside, outside), 0.0, 1.0).astype(np.float32)
    return image, mask


def _blob(rng: np.random.Generator, *, radius: float, jitter: float, roughness: float) -> np.ndarray:
    """uint8 cube (2h+1)^3 holding one axis-aligned ellipsoid with a smoothly wobbling boundary.

    A voxel is inside where its ellipsoidal distance d < 1 + roughness * w, w a smooth field in
    [-1, 1]. The centre voxel (d = 0) is always inside, so the blob is never empty.
    """
    semi_axes = radius * rng.uniform(1.0 - jitter, 1.0 + jitter, size=3)
    half = _half_extent(radius, jitter, roughness)
    offsets = np.arange(-half, half + 1, dtype=np.float32)
    d2 = sum(
        (offsets.reshape([-1 if k == axis else 1 for k in range(3)]) / semi_axes[axis]) ** 2 for axis in range(3)
    )
    nodes = rng.uniform(-1.0, 1.0, size=(_BOUNDARY_NODES,) * 3).astype(np.float32)
    wobble = _resize(nodes, 2 * half + 1)
    return (np.sqrt(d2) < 1.0 + roughness * wobble).astype(np.uint8)


def _smooth_field(rng: np.random.Generator, size: int) -> np.ndarray:
    """float32 size^3 random field with ~8-voxel features, zero mean and unit std."""
    nodes = rng.standard_normal((math.ceil(size / _TEXTURE_CELL) + 1,) * 3).astype(np.float32)
    field = _resize(nodes, size)
    field -= field.mean()
    return field / max(float(field.std()), 1e-6)


def _resize(nodes: np.ndarray, size: int) -> np.ndarray:
    """Trilinear interpolation of a small cube of random nodes up to size^3."""
    return zoom(nodes, size / nodes.shape[0], order=1, grid_mode=False)


def _half_extent(radius: float, jitter: float, roughness: float) -> int:
    """Half side (voxels) of the cube that holds a blob of this radius at the largest shape jitter."""
    return math.ceil(radius * (1.0 + jitter) * (1.0 + roughness))


def _max_radius(size: int, jitter: float, roughness: float) -> float:
    """Largest radius whose blob cube (2 * half + 1 voxels) fits a size^3 volume."""
    return ((size - 1) // 2) / ((1.0 + jitter) * (1.0 + roughness))
