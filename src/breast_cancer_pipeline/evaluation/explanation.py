"""Explanations checked against experts: how much of a Grad-CAM falls on the expert's lesion.

For an image with a lesion mask drawn by an expert, two figures of its Grad-CAM (a heat map
of the model input's size, values >= 0):

* the **energy inside**: the share of the map's total inside the mask (0 to 1; a map spread
  evenly over the image scores the mask's share of the image, :func:`mask_area`);
* the **pointing game** (Zhang et al., "Top-down neural attention by excitation backprop",
  ECCV 2016): a hit when the map's maximum lies inside the mask (every pixel of it, on a tie).

:func:`explanation_summary` averages both over images, per class and overall, with
percentile bootstrap intervals (patients resampled whole when one has several images,
:func:`breast_cancer_pipeline.metrics.bootstrap_intervals`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from breast_cancer_pipeline import metrics as m

#: The per-image figures, in the order of :func:`image_figures`'s columns.
FIGURES = ("energy_inside", "pointing_game", "mask_area")


def energy_inside(cam: np.ndarray, mask: np.ndarray) -> float:
    """The share of the map's total inside the mask; 0 for a map that is zero everywhere.

    Args:
        cam: ``(H, W)`` map, values >= 0.
        mask: ``(H, W)`` boolean mask.

    Raises:
        ValueError: The shapes differ.
    """
    cam, mask = _checked(cam, mask)
    total = float(cam.sum())
    return float(cam[mask].sum()) / total if total > 0 else 0.0


def pointing_hit(cam: np.ndarray, mask: np.ndarray) -> float:
    """1.0 when the map's maximum lies inside the mask, else 0.0.

    When several pixels share the maximum, every one must lie inside: a flat map, or a map
    zero everywhere, points nowhere (0.0 unless the mask is the whole image).

    Raises:
        ValueError: The shapes differ.
    """
    cam, mask = _checked(cam, mask)
    if not (cam > 0).any():
        return 0.0
    return float(mask[cam == cam.max()].all())


def mask_area(mask: np.ndarray) -> float:
    """The mask's share of the image: the energy inside of a map spread evenly."""
    return float(np.asarray(mask, dtype=bool).mean())


def image_figures(cams: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """:data:`FIGURES` of each image: ``(n, 3)``.

    Args:
        cams: ``(n, H, W)`` maps.
        masks: ``(n, H, W)`` boolean masks.
    """
    return np.array(
        [
            [energy_inside(c, k), pointing_hit(c, k), mask_area(k)]
            for c, k in zip(cams, masks, strict=True)
        ],
        dtype=np.float64,
    ).reshape(-1, len(FIGURES))


def _checked(cam: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cam, mask = np.asarray(cam, dtype=np.float64), np.asarray(mask, dtype=bool)
    if cam.shape != mask.shape:
        raise ValueError(f"a {cam.shape} map does not fit a {mask.shape} mask")
    return np.clip(np.nan_to_num(cam, nan=0.0), 0.0, None), mask


def _means(_: np.ndarray, values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return dict.fromkeys(FIGURES, float("nan"))
    return {name: float(values[:, i].mean()) for i, name in enumerate(FIGURES)}


def _block(
    values: np.ndarray, y: np.ndarray, groups: np.ndarray | None, bootstrap: dict[str, Any]
) -> dict[str, Any]:
    """``n``, each figure's mean and the intervals of energy inside and the pointing game."""
    block: dict[str, Any] = {"n": len(values), **_means(y, values)}
    if len(values) == 0:
        return block
    intervals = m.bootstrap_intervals(
        y,
        values,
        _means,
        int(bootstrap["n_resamples"]),
        float(bootstrap["confidence"]),
        int(bootstrap["seed"]),
        groups,
    )
    del intervals["mask_area"]
    return {**block, **m.interval_keys(intervals)}


def explanation_summary(
    figures: np.ndarray,
    y: np.ndarray,
    class_names: Sequence[str],
    bootstrap: dict[str, Any],
    groups: np.ndarray | None = None,
) -> dict[str, Any]:
    """Energy inside and pointing game, overall and per class, with bootstrap intervals.

    Args:
        figures: ``(n, 3)`` from :func:`image_figures`, one row per image with a mask.
        y: The class index of each image.
        class_names: The model's classes (index order).
        bootstrap: ``reporting.bootstrap`` (``n_resamples``, ``confidence``, ``seed``).
        groups: The patient of each image (a cluster bootstrap when one has several), or
            None.

    Returns:
        ``n``, ``energy_inside`` and ``pointing_game`` with ``_ci_low``/``_ci_high``,
        ``mask_area`` (the energy inside of an even map), ``bootstrap`` (``cluster`` or
        ``image``) and ``per_class``: the same per class that has images with masks.
    """
    figures, y = np.asarray(figures, dtype=np.float64), np.asarray(y)
    summary = _block(figures, y, groups, bootstrap)
    summary["bootstrap"] = m.bootstrap_kind(groups)
    summary["per_class"] = {}
    for k, name in enumerate(class_names):
        rows = np.flatnonzero(y == k)
        if rows.size:
            class_groups = None if groups is None else np.asarray(groups)[rows]
            summary["per_class"][name] = _block(figures[rows], y[rows], class_groups, bootstrap)
    return summary
