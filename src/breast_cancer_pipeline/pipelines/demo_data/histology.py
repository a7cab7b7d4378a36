"""Large RGB microscopy fields, H&E-like, whose class signal is in the nuclei.

The ``histology`` preset kind (``demo_data.presets.<name>.kind: histology``). One field is drawn
as two amounts per pixel, haematoxylin (nuclei: purple) and eosin (stroma: pink), and coloured
by the site's stain vectors with the Beer-Lambert law, ``RGB = 255 exp(-(h H + e E))``, as
colour deconvolution models a stained slide (Ruifrok and Johnston 2001):

1. Tissue with white lumina (about a fifth of the field), fibrous stroma, and nuclei scattered
   in it (``nuclei_per_10k_px``, radius ``nucleus_radius_px``).
2. The lesion, never in a normal field: a cluster of nuclei in a disc of
   ``cluster_radius_px`` (the mask):

   * ``benign``: ``cluster_nuclei`` small regular nuclei;
   * ``malignant``: the same amount of haematoxylin in fewer nuclei, enlarged
     (``malignant_nucleus_radius_px``), darker and irregular in outline.

   Resized to the demo's 128 px both are one purple patch; at full resolution the nuclei
   differ plainly.
3. Each field's stain amounts vary by ``stain_variation``; the external site's stain vectors
   move towards ``external_hematoxylin`` and ``external_eosin`` by its ``site_shift``.
"""

from __future__ import annotations

import math

import numpy as np

from .noise import blur, disc, smooth_noise
from .parameters import HistologyParams

__all__ = ["render_histology", "stain_vectors"]

_BENIGN_DARKNESS = 0.8  # haematoxylin of a benign nucleus
_MALIGNANT_DARKNESS = 1.4  # of a malignant one: hyperchromatic


def stain_vectors(cfg: HistologyParams, shift: float) -> tuple[np.ndarray, np.ndarray]:
    """The haematoxylin and eosin optical densities (RGB) of a site ``shift`` away."""
    hematoxylin, eosin = np.array(cfg.hematoxylin), np.array(cfg.eosin)
    towards_h = np.array(cfg.external_hematoxylin) - hematoxylin
    towards_e = np.array(cfg.external_eosin) - eosin
    return (
        np.clip(hematoxylin + shift * towards_h, 0.0, None),
        np.clip(eosin + shift * towards_e, 0.0, None),
    )


def _stamp(
    canvas: np.ndarray,
    centre: tuple[float, float],
    radius: float,
    amount: float,
    rng: np.random.Generator,
    irregular: bool,
) -> None:
    """Draw one nucleus (a soft ellipse, lobulated when ``irregular``) into ``canvas``."""
    elongation = rng.uniform(1.0, 1.6 if irregular else 1.3)
    angle = rng.uniform(0.0, math.pi)
    half = int(math.ceil(radius * math.sqrt(elongation) * 1.5)) + 2
    top, left = int(centre[0]) - half, int(centre[1]) - half
    rows = np.arange(max(top, 0), min(top + 2 * half + 1, canvas.shape[0]))
    cols = np.arange(max(left, 0), min(left + 2 * half + 1, canvas.shape[1]))
    if rows.size == 0 or cols.size == 0:
        return
    dy, dx = rows[:, None] + 0.5 - centre[0], cols[None, :] + 0.5 - centre[1]
    u = dx * math.cos(angle) + dy * math.sin(angle)
    v = -dx * math.sin(angle) + dy * math.cos(angle)
    rho = np.hypot(u / math.sqrt(elongation), v * math.sqrt(elongation)) / radius
    if irregular:
        phi = np.arctan2(v, u)
        for k in (2, 3, 5):
            rho = rho / (1.0 + rng.uniform(0.05, 0.2) * np.cos(k * phi + rng.uniform(0, 6.3)))
    soft = amount * 0.5 * (1.0 - np.tanh((rho - 1.0) * radius / 0.6))
    patch = canvas[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    np.maximum(patch, soft, out=patch)


def _points_in(rng: np.random.Generator, where: np.ndarray, count: int) -> np.ndarray:
    """``count`` random pixel centres ``(row, col)`` among the true pixels of ``where``."""
    rows, cols = np.nonzero(where)
    if rows.size == 0:
        return np.zeros((0, 2))
    picks = rng.integers(rows.size, size=count)
    return np.stack([rows[picks], cols[picks]], axis=1) + rng.uniform(0, 1, (count, 2))


def _cluster(
    rng: np.random.Generator,
    hematoxylin: np.ndarray,
    tissue: np.ndarray,
    malignant: bool,
    cfg: HistologyParams,
) -> np.ndarray:
    """Draw the lesion's cluster of nuclei into ``hematoxylin``; its mask (a disc)."""
    height, width = tissue.shape
    radius = float(rng.uniform(*cfg.cluster_radius_px))
    margin = int(math.ceil(radius))
    inside = np.zeros_like(tissue, dtype=bool)
    inside[margin : height - margin, margin : width - margin] = True
    candidates = inside & (tissue > 0.9)
    if not candidates.any():  # a small field: anywhere
        candidates = np.ones_like(inside)
    centre = _points_in(rng, candidates, 1)[0]
    count = int(rng.integers(cfg.cluster_nuclei[0], cfg.cluster_nuclei[1] + 1))
    sizes, darkness = cfg.nucleus_radius_px, _BENIGN_DARKNESS
    if malignant:  # the benign cluster's haematoxylin in fewer, larger, darker nuclei
        benign_stain = count * np.mean(sizes) ** 2 * darkness
        sizes, darkness = cfg.malignant_nucleus_radius_px, _MALIGNANT_DARKNESS
        count = max(1, round(benign_stain / (np.mean(sizes) ** 2 * darkness)))
    for _ in range(count):
        distance = radius * math.sqrt(rng.uniform(0.0, 0.85))
        angle = rng.uniform(0.0, 2 * math.pi)
        where = (centre[0] + distance * math.sin(angle), centre[1] + distance * math.cos(angle))
        amount = darkness * rng.uniform(0.85, 1.15)
        _stamp(hematoxylin, where, rng.uniform(*sizes), amount, rng, irregular=malignant)
    return disc((height, width), centre, radius)


def render_histology(
    rng: np.random.Generator, label: str, cfg: HistologyParams, shift: float
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one field.

    Args:
        rng: The image's own generator.
        label: ``normal``, ``benign`` or ``malignant`` (the lesion drawn).
        cfg: The preset.
        shift: 0 for the first site; the preset's ``site_shift`` for the external one.

    Returns:
        The RGB field as floats in [0, 255], shape ``(*image_size, 3)``, and its binary mask.
    """
    height, width = cfg.image_size
    shape, side = (height, width), min(height, width)
    tissue = 0.5 * (1.0 + np.tanh((smooth_noise(rng, shape, side / 9, side / 9) + 0.85) / 0.1))
    fibres = smooth_noise(rng, shape, 2.5, 14.0) + 0.6 * smooth_noise(rng, shape, 10.0, 3.0)
    eosin = tissue * np.clip(0.5 + 0.08 * fibres + 0.1 * smooth_noise(rng, shape, 30, 30), 0, 1)
    hematoxylin = 0.05 * tissue
    scattered = rng.poisson(cfg.nuclei_per_10k_px * tissue.sum() / 1e4)
    for where in _points_in(rng, tissue > 0.5, scattered):
        radius = rng.uniform(*cfg.nucleus_radius_px)
        _stamp(hematoxylin, tuple(where), radius, rng.uniform(0.6, 0.9), rng, irregular=False)
    mask = np.zeros(shape, dtype=bool)
    if label != "normal":
        mask = _cluster(rng, hematoxylin, tissue, label == "malignant", cfg)
    low, high = 1.0 - cfg.stain_variation, 1.0 + cfg.stain_variation
    h_vector, e_vector = stain_vectors(cfg, shift)
    density = (
        blur(hematoxylin * rng.uniform(low, high), 0.7)[..., None] * h_vector
        + blur(eosin * rng.uniform(low, high), 0.7)[..., None] * e_vector
    )
    rgb = 255.0 * np.exp(-density) + rng.normal(0.0, 2.0, (*shape, 3))
    return np.clip(rgb, 0.0, 255.0), mask
