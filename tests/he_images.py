"""Synthetic H&E-like RGB images for the stain tests, made by the Beer-Lambert law.

Each 4 px block is blank background, haematoxylin only (a nucleus), eosin only (stroma) or
both, in random amounts; a pixel's colour is ``240 * exp(-C @ stains.T)`` plus noise.
A "site" is a pair of stain vectors and a concentration scale, so two sites differ in colour
only through their staining, which normalisation is meant to undo.
"""

from __future__ import annotations

import numpy as np

#: Haematoxylin and eosin optical densities (columns) of H&E slides: torchstain's reference.
SITE_A = np.array([[0.5626, 0.7201, 0.4062], [0.2159, 0.8012, 0.5581]]).T
#: A second site: redder haematoxylin, bluer eosin (Ruifrok and Johnston's haematoxylin).
SITE_B = np.array([[0.65, 0.70, 0.29], [0.10, 0.90, 0.42]]).T


def _unit(stains: np.ndarray) -> np.ndarray:
    return stains / np.linalg.norm(stains, axis=0, keepdims=True)


def he_images(
    n: int,
    size: int,
    seed: int,
    stains: np.ndarray = SITE_A,
    scale: tuple[float, float] = (1.2, 1.4),
) -> np.ndarray:
    """``n`` ``uint8`` RGB images ``(n, size, size, 3)``.

    Args:
        n: Number of images.
        size: Side in pixels (a multiple of 4).
        seed: Seed of the concentrations and the noise.
        stains: ``(3, 2)`` optical densities of haematoxylin and eosin (columns).
        scale: The two stains' largest concentrations.
    """
    rng = np.random.default_rng(seed)
    blocks = (n, size // 4, size // 4)
    # Per 4 px block: background, haematoxylin only (nuclei), eosin only (stroma) or both.
    kind = rng.choice(4, size=blocks, p=[0.2, 0.2, 0.3, 0.3])
    amount = rng.uniform(0.3, 1.0, (*blocks, 2))
    amount[..., 0] *= np.isin(kind, (1, 3))
    amount[..., 1] *= np.isin(kind, (2, 3))
    fields = np.repeat(np.repeat(amount, 4, axis=1), 4, axis=2)
    fields = fields * rng.uniform(0.8, 1.0, fields.shape) * np.asarray(scale)
    rgb = 240.0 * np.exp(-fields @ _unit(stains).T) + rng.normal(0.0, 1.0, (n, size, size, 3))
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)
