"""Synthetic, demo-sized training data for the training benchmarks (no files needed).

Three classes of 128 px grayscale images on a speckled background: a round bright mass, an
irregular cluster of small masses, or nothing. Sized like the demo (315 train / 69 val).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.harness import quick

AUGMENTATION = {
    "flip": "horizontal",
    "rotation": 0.05,
    "zoom": 0.1,
    "translation": 0.05,
    "contrast": 0.1,
}
CLASSES = np.array(["benign", "malignant", "normal"])


def images(
    n: int, size: int = 128, seed: int = 0, signal: float = 70.0
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images (``uint8``, N×size×size×1) and their labels.

    ``signal`` is the masses' brightness over the background (noise std 25): lower is harder.
    """
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    yy, xx = np.mgrid[:size, :size]
    x = rng.normal(90, 25, (n, size, size)).clip(0, 255)
    for i, label in enumerate(y):
        cy, cx = rng.uniform(0.3, 0.7, 2) * size
        if label == 0:
            r = rng.uniform(0.08, 0.15) * size
            x[i][(yy - cy) ** 2 + (xx - cx) ** 2 < r**2] += signal
        elif label == 1:
            for _ in range(6):
                oy, ox = rng.normal(0, 0.06 * size, 2)
                r = rng.uniform(0.03, 0.06) * size
                x[i][(yy - cy - oy) ** 2 + (xx - cx - ox) ** 2 < r**2] += signal
    return x.clip(0, 255).astype(np.uint8)[..., None], y.astype(np.int32)


def model_input(workdir: Path) -> dict[str, np.ndarray]:
    """Train and validation arrays saved in ``workdir`` and loaded memory-mapped.

    Demo-sized (315 train / 69 val, 128 px); 48 / 24 at 32 px in a smoke run (``BENCH_QUICK``).
    """
    n_train, n_val, size = (48, 24, 32) if quick() else (315, 69, 128)
    x_train, y_train = images(n_train, size, seed=0)
    x_val, y_val = images(n_val, size, seed=1)
    arrays = {"x_train": x_train, "y_train": y_train, "x_val": x_val, "y_val": y_val}
    for key, value in arrays.items():
        np.save(workdir / f"{key}.npy", value)
    loaded = {key: np.load(workdir / f"{key}.npy", mmap_mode="r") for key in arrays}
    return {**loaded, "class_names": CLASSES}
