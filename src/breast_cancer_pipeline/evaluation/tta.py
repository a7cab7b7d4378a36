"""Test-time augmentation: the model's probabilities averaged over fixed views of each image.

``evaluation.tta`` names the family of views, ``evaluation.tta_passes`` how many of them are
averaged (the original image is always the first), ``evaluation.tta_shift`` how far a shifted
view moves (a fraction of the image side). The views are a fixed, ordered list (no random
state), so a rerun gives identical probabilities and the served model, the batch command and
reporting see the same views:

* ``off``: the image itself (one forward pass: nothing added to the served latency);
* ``flips``: the image, flipped left-right, flipped top-bottom, both (at most 4 views);
* ``flips_shifts``: the image, flipped left-right, shifted by ``(+d, +d)`` and ``(-d, -d)``
  pixels, flipped top-bottom, shifted by ``(+d, -d)`` and ``(-d, +d)``, flipped both ways
  (at most 8 views); a shift repeats the edge pixels into the strip it uncovers.

:func:`average_over_views` is the one place that averages: in probability space (the mean of
the softmax outputs, not of the logits), one forward pass per view.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

#: A view: ``(flip rows, flip columns, shift down, shift right)``; shifts in units of ``d``.
View = tuple[bool, bool, int, int]

#: The views of each ``evaluation.tta`` mode, in the order they are taken.
VIEWS: dict[str, tuple[View, ...]] = {
    "off": ((False, False, 0, 0),),
    "flips": (
        (False, False, 0, 0),
        (False, True, 0, 0),
        (True, False, 0, 0),
        (True, True, 0, 0),
    ),
    "flips_shifts": (
        (False, False, 0, 0),
        (False, True, 0, 0),
        (False, False, 1, 1),
        (False, False, -1, -1),
        (True, False, 0, 0),
        (False, False, 1, -1),
        (False, False, -1, 1),
        (True, True, 0, 0),
    ),
}


def mode_of(value: str | bool) -> str:
    """``evaluation.tta`` as a mode name (``false`` is ``off``).

    YAML reads an unquoted ``off`` (e.g. in ``--params evaluation.tta=off``) as ``false``.
    """
    return "off" if value is False else value


def tta_settings(evaluation: dict) -> dict[str, Any]:
    """The views the served model averages (``serving.json``'s ``tta``) from ``evaluation``.

    Returns:
        ``{"mode", "passes", "shift"}``; ``passes`` is 1 when ``mode`` is ``off``.
    """
    mode = mode_of(evaluation["tta"])
    return {
        "mode": mode,
        "passes": int(evaluation["tta_passes"]) if mode != "off" else 1,
        "shift": float(evaluation["tta_shift"]),
    }


def views(mode: str, passes: int) -> tuple[View, ...]:
    """The views averaged for ``mode`` with ``passes`` views (``off``: the image alone).

    Raises:
        ValueError: ``mode`` is unknown or ``passes`` is not within 1 and the views it has.
    """
    if mode not in VIEWS:
        raise ValueError(f"evaluation.tta must be one of {sorted(VIEWS)}, got {mode!r}")
    if mode == "off":
        return VIEWS["off"]
    available = len(VIEWS[mode])
    if not 1 <= passes <= available:
        raise ValueError(
            f"evaluation.tta_passes = {passes}, but tta {mode!r} has {available} views "
            f"(the original included): set tta_passes between 1 and {available}"
        )
    return VIEWS[mode][:passes]


def shift_pixels(image_size: int, shift: float) -> int:
    """The shift ``d`` in pixels: ``shift`` (a fraction of the side) of it, at least 1."""
    return max(1, round(image_size * shift))


def view_images(images: np.ndarray, view: View, step: int) -> np.ndarray:
    """One view of a batch ``(N, H, W, C)``: flipped, then shifted by ``step`` pixels per unit.

    A shift replicates the edge row or column into the strip it uncovers (no black border
    the model never saw in training). The identity view returns ``images`` itself.
    """
    flip_rows, flip_cols, down, right = view
    out = images
    if flip_rows:
        out = out[:, ::-1]
    if flip_cols:
        out = out[:, :, ::-1]
    if down or right:
        dy, dx = down * step, right * step
        pad = ((0, 0), (max(dy, 0), max(-dy, 0)), (max(dx, 0), max(-dx, 0)), (0, 0))
        padded = np.pad(out, pad, mode="edge")
        height, width = images.shape[1:3]
        top, left = max(-dy, 0), max(-dx, 0)
        out = padded[:, top : top + height, left : left + width]
    return out if out is images else np.ascontiguousarray(out)


def average_over_views(
    forward: Callable[[np.ndarray], np.ndarray],
    images: np.ndarray,
    mode: str,
    passes: int,
    shift: float,
    first: np.ndarray | None = None,
) -> np.ndarray:
    """The mean over the views of ``forward``'s class probabilities (probability space).

    Args:
        forward: Batch of images ``(N, H, W, C)`` to class probabilities ``(N, k)``.
        images: The decoded, resized batch.
        mode: ``evaluation.tta`` (``off``: ``forward(images)`` unchanged, one pass).
        passes: ``evaluation.tta_passes``: views averaged, the original included.
        shift: ``evaluation.tta_shift``: the shift of a shifted view, a fraction of the side.
        first: ``forward(images)`` when the caller has it already (e.g. from a pass that also
            gave the penultimate features): the original view is not run again.

    Returns:
        ``float32`` array ``(N, k)``; its rows sum to 1 when ``forward``'s do.

    Raises:
        ValueError: An unknown ``mode`` or a ``passes`` out of range (see :func:`views`).
    """
    chosen = views(mode, passes)
    original = forward(images) if first is None else first
    if len(chosen) == 1:
        return np.asarray(original, dtype=np.float32)
    step = shift_pixels(images.shape[1], shift)
    total = np.asarray(original, dtype=np.float64)
    for view in chosen[1:]:
        total = total + np.asarray(forward(view_images(images, view, step)), dtype=np.float64)
    return (total / len(chosen)).astype(np.float32)
