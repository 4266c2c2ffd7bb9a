"""Procedural, seeded textures for the synthetic segmentation task (no downloads).

The reference study (A. Kamath, J. Willmann, N. Andratschke, M. Reyes, "Do we really need that
skip-connection? Understanding its interplay with task complexity", MICCAI 2023, LNCS 14222,
pp. 302-311; code: github.com/amithjkamath/to_skip_or_not) blended two photographed textures, one for the foreground and one for the background of the whole dataset.
Here every texture is generated from a `numpy.random.Generator`, so a dataset is fully defined by
its seed. Each family is a function ``(rng, *, size, frequency) -> float64 (size, size) in
[0, 1]`` where `frequency` is the dominant spatial frequency in cycles per pixel. Frequencies are
per pixel, not per image, because texture disparity (LBP with radius 3) sees pixels, whatever the
image size.

A dataset names its two textures in the spec (`TexturePair`); each is drawn once, on a canvas
twice the image size, and every image takes its own seeded crop of each canvas (as the reference
cropped its two photographs at random offsets). So a texture is foreground in every image or in
none: the network can learn what the object looks like, and the blend factor alone sets how hard
that is.

Example:
    >>> pair = TexturePair()
    >>> canvas = texture_canvas(pair.foreground, np.random.default_rng(0), size=64)
    >>> canvas.shape, float(canvas.min()), float(canvas.max())
    ((64, 64), 0.0, 1.0)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from pydantic import Field, field_validator

from study.errors import unknown_name
from study.strict import StrictModel

TextureFn = Callable[..., np.ndarray]


def _normalise(x: np.ndarray) -> np.ndarray:
    """Scale to [0, 1], clipping the extreme 0.5% tails so one outlier does not flatten contrast."""
    lo, hi = np.percentile(x, [0.5, 99.5])
    if hi <= lo:
        return np.zeros_like(x, dtype=np.float64)
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0)


def _coords(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    return yy, xx


def _freq_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Frequency coordinates (cycles/pixel) of an unshifted 2D FFT of a size x size image."""
    f = np.fft.fftfreq(size)
    return np.meshgrid(f, f, indexing="ij")


def _filter_noise(rng: np.random.Generator, size: int, transfer: np.ndarray) -> np.ndarray:
    """White Gaussian noise shaped by a real, symmetric transfer function in the Fourier domain."""
    noise = rng.standard_normal((size, size))
    return np.real(np.fft.ifft2(np.fft.fft2(noise) * transfer))


def _gabor_transfer(fy: np.ndarray, fx: np.ndarray, frequency: float, theta: float, bandwidth: float) -> np.ndarray:
    """Two Gaussian bumps at +-(frequency, theta): the spectrum of a Gabor kernel."""
    cy, cx = frequency * np.sin(theta), frequency * np.cos(theta)
    s2 = 2.0 * bandwidth**2
    return np.exp(-((fy - cy) ** 2 + (fx - cx) ** 2) / s2) + np.exp(-((fy + cy) ** 2 + (fx + cx) ** 2) / s2)


def grating(rng: np.random.Generator, *, size: int, frequency: float) -> np.ndarray:
    """An oriented sinusoidal grating with random orientation and phase."""
    theta, phase = rng.uniform(0.0, np.pi), rng.uniform(0.0, 2 * np.pi)
    yy, xx = _coords(size)
    return _normalise(np.sin(2 * np.pi * frequency * (xx * np.cos(theta) + yy * np.sin(theta)) + phase))


def plaid(rng: np.random.Generator, *, size: int, frequency: float) -> np.ndarray:
    """Two crossed gratings of similar frequency, 45-90 degrees apart: a checkered weave."""
    theta = rng.uniform(0.0, np.pi)
    thetas = (theta, theta + rng.uniform(np.pi / 4, np.pi / 2))
    freqs = (frequency, frequency * rng.uniform(0.8, 1.25))
    yy, xx = _coords(size)
    out = np.zeros((size, size))
    for t, f in zip(thetas, freqs):
        out += np.sin(2 * np.pi * f * (xx * np.cos(t) + yy * np.sin(t)) + rng.uniform(0.0, 2 * np.pi))
    return _normalise(out)


def bandpass_noise(rng: np.random.Generator, *, size: int, frequency: float) -> np.ndarray:
    """Isotropic noise whose energy sits on a ring of radius `frequency` (blobby, no orientation)."""
    fy, fx = _freq_grid(size)
    radius = np.hypot(fy, fx)
    transfer = np.exp(-((radius - frequency) ** 2) / (2 * (0.3 * frequency) ** 2))
    return _normalise(_filter_noise(rng, size, transfer))


def oriented_noise(rng: np.random.Generator, *, size: int, frequency: float) -> np.ndarray:
    """Gabor-filtered noise: streaks of one orientation with random, broken phase (wood-grain like)."""
    fy, fx = _freq_grid(size)
    transfer = _gabor_transfer(fy, fx, frequency, rng.uniform(0.0, np.pi), 0.15 * frequency)
    return _normalise(_filter_noise(rng, size, transfer))


def gabor_patches(rng: np.random.Generator, *, size: int, frequency: float) -> np.ndarray:
    """Sparse Gabor patches at random places in three orientations (sparse Gabor noise).

    Random impulses convolved with a Gabor kernel per orientation, computed with one FFT each.
    The impulse density gives about one patch per kernel footprint, so patches overlap a little
    and the texture is neither flat nor a uniform field.
    """
    fy, fx = _freq_grid(size)
    theta0 = rng.uniform(0.0, np.pi)
    density = min(0.5, 0.6 * frequency**2)  # about one impulse per (1/frequency)^2 pixels
    spectrum = np.zeros((size, size), dtype=np.complex128)
    for k in range(3):
        impulses = (rng.random((size, size)) < density) * rng.choice([-1.0, 1.0], size=(size, size))
        transfer = _gabor_transfer(fy, fx, frequency, theta0 + k * np.pi / 3, 0.35 * frequency)
        spectrum += np.fft.fft2(impulses) * transfer
    return _normalise(np.real(np.fft.ifft2(spectrum)))


TEXTURES: dict[str, TextureFn] = {
    "grating": grating,
    "plaid": plaid,
    "bandpass_noise": bandpass_noise,
    "oriented_noise": oriented_noise,
    "gabor_patches": gabor_patches,
}


class TextureSpec(StrictModel):
    """One texture of a dataset: a family from `TEXTURES` at a dominant frequency (cycles/pixel)."""

    family: str
    frequency: float = Field(gt=0, le=0.5, allow_inf_nan=False, description="cycles per pixel; 0.5 is Nyquist")

    @field_validator("family")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in TEXTURES:  # the did-you-mean text every registry gives (study.errors.unknown_name)
            raise ValueError(str(unknown_name("texture", v, TEXTURES)))
        return v


class TexturePair(StrictModel):
    """The foreground and background textures of a whole synthetic 2D dataset.

    The defaults, a fine oriented grating on coarse isotropic band-pass noise, were chosen by
    training a U-Net on them (64 px images, 60 training images): Dice about 0.93 at alpha 0.1,
    0.89 at 0.7 and 0.75 at 0.9, the published regime. Two band-pass noises an octave apart were
    too hard (0.84 at alpha 0.1); textures of different families and bands drawn per image were
    learnable but barely harder at 0.9.
    """

    foreground: TextureSpec = TextureSpec(family="grating", frequency=0.2)
    background: TextureSpec = TextureSpec(family="bandpass_noise", frequency=0.08)


def texture_canvas(spec: TextureSpec, rng: np.random.Generator, *, size: int) -> np.ndarray:
    """A (size, size) texture of `spec` in [0, 1], every random choice (orientation, phase) from `rng`."""
    return TEXTURES[spec.family](rng, size=size, frequency=spec.frequency)


def crop(canvas: np.ndarray, rng: np.random.Generator, *, size: int) -> np.ndarray:
    """A random (size, size) window of `canvas` (the per-image texture offset)."""
    y, x = (int(rng.integers(0, n - size + 1)) for n in canvas.shape)
    return canvas[y : y + size, x : x + size]
