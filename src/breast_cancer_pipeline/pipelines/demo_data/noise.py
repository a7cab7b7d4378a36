"""Smooth random fields and a Gaussian blur: what every demo generator draws texture with.

FFT based, so the cost does not grow with the correlation length.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["blur", "gaussian_transfer", "smooth_noise"]


def disc(shape: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    """Boolean ``shape`` array: True where a pixel's centre is within ``radius`` of ``centre``."""
    rows, cols = np.ogrid[0 : shape[0], 0 : shape[1]]
    return (rows + 0.5 - centre[0]) ** 2 + (cols + 0.5 - centre[1]) ** 2 <= radius**2


def gaussian_transfer(shape: tuple[int, int], sigma_y: float, sigma_x: float) -> np.ndarray:
    """The frequency response of a Gaussian of ``(sigma_y, sigma_x)`` for a real 2-D FFT."""
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    return np.exp(-2.0 * np.pi**2 * ((sigma_y * fy) ** 2 + (sigma_x * fx) ** 2))


def blur(image: np.ndarray, sigma_y: float, sigma_x: float | None = None) -> np.ndarray:
    """Gaussian blur with reflected borders (FFT based, so the cost does not grow with sigma)."""
    sigma_x = sigma_y if sigma_x is None else sigma_x
    if sigma_y <= 0 and sigma_x <= 0:
        return image
    pad_y = min(int(math.ceil(3 * sigma_y)), image.shape[0] - 1)
    pad_x = min(int(math.ceil(3 * sigma_x)), image.shape[1] - 1)
    padded = np.pad(image, ((pad_y, pad_y), (pad_x, pad_x)), mode="reflect")
    transfer = gaussian_transfer(padded.shape, sigma_y, sigma_x)
    blurred = np.fft.irfft2(np.fft.rfft2(padded) * transfer, s=padded.shape)
    return blurred[pad_y : pad_y + image.shape[0], pad_x : pad_x + image.shape[1]]


def smooth_noise(
    rng: np.random.Generator,
    shape: tuple[int, int],
    sigma_y: float,
    sigma_x: float,
    count: int | None = None,
) -> np.ndarray:
    """Stationary Gaussian noise with unit standard deviation and the given correlation length.

    With ``count``, returns a stack of ``count`` independent fields (one batched FFT).
    """
    white = rng.standard_normal(shape if count is None else (count, *shape))
    transfer = gaussian_transfer(shape, sigma_y, sigma_x)
    field = np.fft.irfft2(np.fft.rfft2(white) * transfer, s=shape)
    return field / (field.std(axis=(-2, -1), keepdims=True) + 1e-12)
