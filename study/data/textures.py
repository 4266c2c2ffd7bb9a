"""Procedural, seeded textures for the synthetic segmentation task (no downloads).

The reference study (DESIGN.md 4.1) blended two photographed textures; here every texture is
generated from a `numpy.random.Generator`, so a dataset is fully defined by its seed. Each family
is a function ``(rng, *, size, frequency) -> float64 (size, size) in [0, 1]`` where `frequency`
is the dominant spatial frequency in cycles per pixel. Frequencies are per pixel, not per image,
because texture disparity (LBP with radius 3) sees pixels, whatever the image size.

`draw_texture_pair` picks a foreground and a background texture of clearly different character:
two different families and one fine and one coarse frequency band.

Example:
    >>> rng = np.random.default_rng(0)
    >>> fg, bg = draw_texture_pair(rng, size=64)
    >>> fg.shape, float(fg.min()), float(fg.max())
    ((64, 64), 0.0, 1.0)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

TextureFn = Callable[..., np.ndarray]

# Dominant frequencies (cycles/pixel). Coarse textures look like smooth edges to a radius-3 LBP,
# fine ones like spots and corners; drawing one of each keeps foreground and background distinct.
COARSE_BAND = (0.04, 0.09)
FINE_BAND = (0.16, 0.30)


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


def draw_texture_pair(rng: np.random.Generator, *, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw a (foreground, background) pair of textures of clearly different character.

    The two come from different families, and one is fine while the other is coarse (which one
    is random), so their local binary pattern statistics differ.

    Args:
        rng: the only source of randomness.
        size: side length in pixels.

    Returns:
        Two float64 arrays of shape (size, size) with values in [0, 1].
    """
    names = sorted(TEXTURES)
    fg_name, bg_name = rng.choice(names, size=2, replace=False)
    bands = [COARSE_BAND, FINE_BAND]
    if rng.random() < 0.5:
        bands.reverse()
    fg = TEXTURES[str(fg_name)](rng, size=size, frequency=rng.uniform(*bands[0]))
    bg = TEXTURES[str(bg_name)](rng, size=size, frequency=rng.uniform(*bands[1]))
    return fg, bg
