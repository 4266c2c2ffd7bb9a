"""Seeded synthetic 2D texture-segmentation data for the skip-connection study.

Each image holds one smooth random blob. The dataset has ONE foreground texture T_fg and ONE
background texture T_bg (`cfg.textures`), as in the reference study (Kamath et al., MICCAI 2023),
and the factor `alpha` blends the background texture into the foreground:

    image = mask * ((1 - alpha) * T_fg + alpha * T_bg) + (1 - mask) * T_bg

so larger alpha = textures more alike = harder task (lower texture disparity). Images differ in
their blob and in where they crop each texture's canvas (the texture's offset), nothing else: a
texture drawn anew per image would be foreground in one image and background in the next, and
nothing learnable would tell the object from its surroundings (Dice stays near a coin's).

Pairing: the blob, the crop offsets and the split of image `i` come from generators seeded by
(cfg.seed, i) alone, never from alpha or from how many images came before; the two canvases
from (cfg.seed, role). Image "img0042" is the same at every alpha but for the blend.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator
from skimage.draw import polygon

from study.data.base import DatasetConfig, LevelData, Split, SplitConfig, split_sizes
from study.data.textures import TexturePair, crop, texture_canvas
from study.data.texture_disparity import texture_disparity
from study.errors import SegstudyError

# Stream tags keep the per-image and the split generators apart for the same seed.
_IMAGE_STREAM = 1
_SPLIT_STREAM = 2
_TEXTURE_STREAM = 3
_CANVAS_SCALE = 2  # canvases are twice the image side, as the reference resized its photographs
_MIN_FOREGROUND = 0.03  # a blob smaller than this share of the image is redrawn
_SAMPLES_PER_SEGMENT = 16


class Synthetic2DConfig(DatasetConfig):
    """The `data:` section of a spec for the synthetic 2D texture dataset."""

    dataset: Literal["synthetic2d"] = "synthetic2d"
    image_size: int = Field(64, ge=16, le=2048)
    n_images: int = Field(100, ge=5, le=100_000)
    split: SplitConfig = SplitConfig()
    seed: int = Field(0, ge=0)
    min_points: int = Field(3, ge=3, le=1000)
    max_points: int = Field(20, ge=3, le=1000)
    spacing: float = Field(1.0, gt=0, allow_inf_nan=False)
    textures: TexturePair = TexturePair()
    # Where a blob sits. `centred`: as the reference drew it (points in the middle half of the image),
    # so the masks alone say much of where the object is: the best mask that ignores the image scores
    # Dice 0.68 on 64x64 images (docs/ARCHITECTURE.md 4.1). `anywhere`: the same blob moved to a random
    # place wholly inside the image, so only the texture tells the object from its surroundings.
    placement: Literal["centred", "anywhere"] = "centred"

    @property
    def spatial_dims(self) -> int:
        return 2

    @model_validator(mode="after")
    def _points_ordered(self) -> Synthetic2DConfig:
        if self.min_points > self.max_points:
            raise ValueError(f"min_points ({self.min_points}) must be <= max_points ({self.max_points})")
        return self


def check_alpha(value: object) -> str | None:
    """None if `value` is a valid blend factor, else what is accepted (for spec validation)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < 1.0:
        return "must be a number in [0, 1)"
    return None


def build_synthetic2d(cfg: Synthetic2DConfig, *, alpha: float) -> LevelData:
    """Build the train/val/calib/test splits of the synthetic dataset at one blend level.

    Args:
        cfg: dataset settings; with `alpha` the only inputs.
        alpha: share of the background texture blended into the foreground, in [0, 1).

    Returns:
        LevelData with float32 images and uint8 masks of shape (N, 1, S, S), ids "img0000"...,
        per-image texture disparity and spacing (cfg.spacing, cfg.spacing).

    Raises:
        SegstudyError: if alpha is outside [0, 1).

    Example:
        >>> level = build_synthetic2d(Synthetic2DConfig(n_images=10, image_size=32), alpha=0.5)
        >>> len(level.train), level.test.images.shape
        (6, (2, 1, 32, 32))
    """
    problem = check_alpha(alpha)
    if problem:
        raise SegstudyError(f"alpha: value {alpha!r} {problem}")
    size = cfg.image_size
    canvases = _canvases(cfg)
    images = np.empty((cfg.n_images, 1, size, size), dtype=np.float32)
    masks = np.empty((cfg.n_images, 1, size, size), dtype=np.uint8)
    for i in range(cfg.n_images):
        images[i, 0], masks[i, 0] = _make_image(cfg, canvases, i, alpha)
    td = np.array([texture_disparity(images[i, 0], masks[i, 0]) for i in range(cfg.n_images)])
    ids = tuple(f"img{i:04d}" for i in range(cfg.n_images))
    spacing = (float(cfg.spacing), float(cfg.spacing))

    def take(idx: np.ndarray) -> Split:
        return Split(images[idx], masks[idx], tuple(ids[j] for j in idx), td[idx], spacing)

    train, val, calib, test = _split_indices(cfg)
    return LevelData(train=take(train), val=take(val), calib=take(calib), test=take(test))


def _canvases(cfg: Synthetic2DConfig) -> tuple[np.ndarray, np.ndarray]:
    """The dataset's foreground and background texture canvases, each seeded by its role alone."""
    side = _CANVAS_SCALE * cfg.image_size
    return tuple(  # type: ignore[return-value]
        texture_canvas(texture, np.random.default_rng([cfg.seed, _TEXTURE_STREAM, role]), size=side)
        for role, texture in enumerate((cfg.textures.foreground, cfg.textures.background))
    )


def _make_image(
    cfg: Synthetic2DConfig, canvases: tuple[np.ndarray, np.ndarray], index: int, alpha: float
) -> tuple[np.ndarray, np.ndarray]:
    """The blended image and the mask of image `index`; everything but the blend ignores alpha."""
    mask_seq, texture_seq, place_seq = np.random.SeedSequence([cfg.seed, _IMAGE_STREAM, index]).spawn(3)
    mask = random_blob_mask(
        np.random.default_rng(mask_seq), size=cfg.image_size, min_points=cfg.min_points, max_points=cfg.max_points
    )
    if cfg.placement == "anywhere":
        mask = moved_anywhere(mask, np.random.default_rng(place_seq))
    offsets = np.random.default_rng(texture_seq)
    fg, bg = (crop(canvas, offsets, size=cfg.image_size) for canvas in canvases)
    image = np.where(mask == 1, (1.0 - alpha) * fg + alpha * bg, bg)
    return image.astype(np.float32), mask


def _split_indices(cfg: Synthetic2DConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A seeded permutation cut into train/val/calib/test, each part sorted so ids come in order."""
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, _SPLIT_STREAM]))
    order = rng.permutation(cfg.n_images)
    n_train, n_val, n_calib, _ = split_sizes(cfg.n_images, cfg.split)
    parts = np.split(order, np.cumsum([n_train, n_val, n_calib]))
    return tuple(np.sort(p) for p in parts)  # type: ignore[return-value]


def random_blob_mask(rng: np.random.Generator, *, size: int, min_points: int, max_points: int) -> np.ndarray:
    """A filled, smooth, closed curve through min..max random points in [0.25, 0.75]^2 of the image.

    Points are ordered by angle around their centroid so the curve rarely crosses itself, then
    joined by a closed Catmull-Rom spline (a cubic Bezier curve through every point). A blob
    covering less than 3% of the image is redrawn from the same generator, so the result is
    still a pure function of the generator's state.

    Returns:
        uint8 (size, size) mask with 1 inside the blob; never empty.
    """
    for _ in range(100):
        n = int(rng.integers(min_points, max_points + 1))
        pts = rng.uniform(0.25, 0.75, size=(n, 2)) * (size - 1)
        centre = pts.mean(axis=0)
        pts = pts[np.argsort(np.arctan2(pts[:, 0] - centre[0], pts[:, 1] - centre[1]))]
        curve = _closed_catmull_rom(pts)
        mask = np.zeros((size, size), dtype=np.uint8)
        rr, cc = polygon(curve[:, 0], curve[:, 1], shape=(size, size))
        mask[rr, cc] = 1
        if mask.mean() >= _MIN_FOREGROUND:
            return mask
    # Practically unreachable (100 degenerate draws in a row); a centred disc keeps the contract.
    yy, xx = np.mgrid[0:size, 0:size]
    return (np.hypot(yy - size / 2, xx - size / 2) < size / 6).astype(np.uint8)


def moved_anywhere(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The blob shifted so its bounding box lies at a uniformly random place wholly inside the image."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    dy = int(rng.integers(-rows[0], mask.shape[0] - rows[-1]))
    dx = int(rng.integers(-cols[0], mask.shape[1] - cols[-1]))
    return np.roll(mask, (dy, dx), axis=(0, 1))  # the box stays inside: nothing wraps round


def _closed_catmull_rom(pts: np.ndarray) -> np.ndarray:
    """Sample a closed uniform Catmull-Rom spline through `pts` (n, 2) as a dense polygon."""
    p0, p1, p2, p3 = (np.roll(pts, shift, axis=0) for shift in (1, 0, -1, -2))
    t = np.linspace(0.0, 1.0, _SAMPLES_PER_SEGMENT, endpoint=False)[None, :, None]
    p0, p1, p2, p3 = (p[:, None, :] for p in (p0, p1, p2, p3))
    curve = 0.5 * (
        2 * p1
        + (-p0 + p2) * t
        + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
        + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3
    )
    return curve.reshape(-1, 2)
