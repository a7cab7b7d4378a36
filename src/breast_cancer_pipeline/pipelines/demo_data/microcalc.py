"""Large grayscale mammogram-like images whose malignant signal is a few pixels wide.

The ``microcalc`` preset kind (``demo_data.presets.<name>.kind: microcalc``). One image:

1. A breast: a half-ellipse of tissue against the chest wall (left or right edge), dark film
   around it, its density a smooth texture (``texture``) brighter towards the chest wall.
2. The finding, never in a normal image:

   * ``malignant``: a cluster of ``specks`` bright squares of ``speck_px`` side, scattered
     (Gaussian, sigma half of ``cluster_radius_px``) around a centre in the tissue;
   * ``benign``: the same draw of specks, its total brightness spread as one diffuse
     Gaussian blob over the same radius.

   Resized to the demo's 128 px both become the same faint blob; at full resolution the specks
   are plain. The mask is the disc of ``cluster_radius_px`` around the centre, holding every
   speck (or the blob's core).
3. Pixel noise (``noise``) and a display gamma (the external site's ``external_gamma``).
"""

from __future__ import annotations

import math

import numpy as np

from .noise import blur, disc, smooth_noise
from .parameters import MicrocalcParams

__all__ = ["render_microcalc"]

_EDGE_PX = 9.0  # width of the skin line's fall-off
#: The tissue texture: correlation lengths (px) and relative weights; in pixels, not in
#: fractions of the image, so a smaller image keeps its texture smooth next to the specks.
_TEXTURE = ((42.0, 1.0), (10.0, 0.6))


def _breast(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, bool]:
    """Soft tissue occupancy in [0, 1] and whether the chest wall is on the left."""
    rows, cols = np.mgrid[0:height, 0:width].astype(float) + 0.5
    left = bool(rng.random() < 0.5)
    depth = cols / width if left else 1.0 - cols / width  # 0 at the chest wall
    reach = rng.uniform(0.75, 0.95)  # how far the breast reaches from the wall
    half_height = rng.uniform(0.42, 0.49) * height
    centre = height / 2 + rng.uniform(-0.04, 0.04) * height
    outline = np.hypot(depth / reach, (rows - centre) / half_height)
    edge = _EDGE_PX
    occupancy = 0.5 * (1.0 - np.tanh((outline - 1.0) * reach * width / edge))
    return occupancy, left


def _finding_centre(
    rng: np.random.Generator, occupancy: np.ndarray, radius: float
) -> tuple[float, float]:
    """A point well inside the tissue, a cluster radius away from the image's border."""
    height, width = occupancy.shape
    margin = int(math.ceil(radius)) + 2
    inner = occupancy[margin : height - margin, margin : width - margin] > 0.97
    rows, cols = np.nonzero(inner)
    if rows.size == 0:  # a tiny image: the middle
        return height / 2, width / 2
    pick = int(rng.integers(rows.size))
    return float(rows[pick] + margin), float(cols[pick] + margin)


def _specks(
    rng: np.random.Generator,
    shape: tuple[int, int],
    centre: tuple[float, float],
    cfg: MicrocalcParams,
) -> tuple[np.ndarray, float]:
    """A cluster of bright squares, and the cluster's radius."""
    radius = float(rng.uniform(*cfg.cluster_radius_px))
    signal = np.zeros(shape)
    for _ in range(int(rng.integers(cfg.specks[0], cfg.specks[1] + 1))):
        side = int(rng.integers(cfg.speck_px[0], cfg.speck_px[1] + 1))
        offset = rng.normal(0.0, radius / 2, size=2)
        distance = float(np.hypot(*offset))
        if distance > radius - side:  # keep the speck inside the disc
            offset *= (radius - side) / max(distance, 1e-9)
        top = int(np.clip(round(centre[0] + offset[0] - side / 2), 0, shape[0] - side))
        left = int(np.clip(round(centre[1] + offset[1] - side / 2), 0, shape[1] - side))
        signal[top : top + side, left : left + side] = rng.uniform(*cfg.speck_contrast)
    return signal, radius


def render_microcalc(
    rng: np.random.Generator, label: str, cfg: MicrocalcParams, shift: float
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one image.

    Args:
        rng: The image's own generator.
        label: ``normal``, ``benign`` or ``malignant`` (the finding drawn).
        cfg: The preset.
        shift: 0 for the first site; the preset's ``site_shift`` for the external one.

    Returns:
        The image as floats in [0, 255], shape ``image_size``, and its binary mask.
    """
    height, width = cfg.image_size
    shape = (height, width)
    occupancy, left = _breast(rng, height, width)
    cols = (np.arange(width) + 0.5) / width
    towards_wall = (1.0 - cols if left else cols)[None, :]
    density = 0.35 + 0.15 * towards_wall
    for sigma, weight in _TEXTURE:
        density = density + weight * cfg.texture * smooth_noise(rng, shape, sigma, sigma)
    image = 0.04 + occupancy * np.clip(density, 0.05, 0.9)
    mask = np.zeros(shape, dtype=bool)
    if label != "normal":
        centre = _finding_centre(rng, occupancy, cfg.cluster_radius_px[1])
        specks, radius = _specks(rng, shape, centre, cfg)
        if label == "benign":  # the same brightness, spread: one diffuse blob
            blob = np.zeros(shape)
            blob[int(centre[0]), int(centre[1])] = specks.sum()
            specks = blur(blob, radius / 2)
        image = image + specks
        mask = disc(shape, centre, radius)
    image = image + cfg.noise * blur(rng.standard_normal(shape), 0.6) / 0.47
    gamma = cfg.external_gamma**shift
    return 255.0 * np.clip(image, 0.0, 1.0) ** gamma, mask
