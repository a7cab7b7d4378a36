"""Input geometry: how a decoded image becomes the model's ``(height, width)`` input.

:func:`fit_image` is the one function that does it. Training's model-input arrays (and so
reporting, which reads them), the external test site, the batch command and the server all
call it with the same :class:`Geometry`: ``augmentation.image_size`` and
``augmentation.resize`` at training time, the packaged model's configuration when serving
(:meth:`Geometry.from_config`), so serving does exactly what training did.

Resize modes (``augmentation.resize``):

* ``stretch``: the image is resized to ``(height, width)`` whatever its aspect
  (:func:`~breast_cancer_pipeline.imaging.resize_image`); a 2:1 mammogram is squashed into a
  square.
* ``letterbox``: the image is scaled to fit inside ``(height, width)`` with its aspect kept and
  centred; the rest is padded with black (0, the background of a mammogram).
* ``crop_foreground``: the image is first cropped to the bounding box of its foreground
  (:func:`foreground_box`: Otsu's threshold on a copy at most
  :data:`ANALYSIS_SIDE` px on its long side, the largest regions kept, so that a film label or
  a bright film edge is left out), widened by ``augmentation.crop_margin``, then letterboxed.

This module imports only numpy, Pillow (through :mod:`~breast_cancer_pipeline.imaging`) and,
when a foreground is searched, ``scipy.ndimage``: never TensorFlow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from breast_cancer_pipeline.imaging import resize_image

RESIZE_MODES: tuple[str, ...] = ("stretch", "letterbox", "crop_foreground")
"""Valid values of ``augmentation.resize``."""

ANALYSIS_SIDE = 256
"""Long side (px) of the copy the foreground is searched on (smaller images: as they are)."""

#: Regions whose area is at least this share of the largest region's are kept together (two
#: pieces of tissue); smaller ones (a film label, a marker, a speck of dust) are left out.
_KEEP_SHARE = 0.25
#: Openings (3 x 3) of the foreground mask before its regions are counted: lines at most
#: about 4 px wide on the analysis copy (a film edge, a ruler) are removed.
_OPENINGS = 2


@dataclass(frozen=True)
class Geometry:
    """The model's input size and how an image is brought to it.

    Attributes:
        height: Input height in pixels.
        width: Input width in pixels.
        resize: One of :data:`RESIZE_MODES`.
        crop_margin: With ``crop_foreground``, the margin added on each side of the
            foreground's box, as a fraction of the image's height (above and below) and width
            (left and right).
    """

    height: int
    width: int
    resize: str = "stretch"
    crop_margin: float = 0.0

    def __post_init__(self) -> None:
        as_size((self.height, self.width))
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, got {self.resize!r}")
        if not 0.0 <= self.crop_margin < 0.5:
            raise ValueError(f"crop_margin must be within [0, 0.5), got {self.crop_margin!r}")

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)``."""
        return self.height, self.width

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Geometry:
        """The geometry of the ``augmentation`` parameters.

        Raises:
            ValueError: A value is invalid (the parameter schema refuses it before a run).
        """
        height, width = as_size(params["image_size"], "augmentation.image_size")
        return cls(height, width, params["resize"], float(params["crop_margin"]))

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Geometry:
        """The geometry of a model's metadata or serving configuration.

        A configuration written before ``resize`` existed has none: ``stretch``, as it was
        trained.

        Raises:
            ValueError: A value is invalid.
        """
        height, width = as_size(config["image_size"])
        return cls(
            height, width, config.get("resize", "stretch"), float(config.get("crop_margin", 0.0))
        )

    def config(self) -> dict[str, Any]:
        """The keys a model's metadata and serving configuration carry.

        ``image_size`` is one int for a square (as before non-square inputs existed), else
        ``[height, width]``.
        """
        size = self.height if self.height == self.width else [self.height, self.width]
        return {"image_size": size, "resize": self.resize, "crop_margin": self.crop_margin}


#: Keys of the model-input arrays that record how their images were made (beside ``x_*``).
ARRAY_KEYS: tuple[str, ...] = ("resize", "crop_margin")


def geometry_arrays(geometry: Geometry) -> dict[str, np.ndarray]:
    """The :data:`ARRAY_KEYS` of model-input arrays made with ``geometry``."""
    return {
        "resize": np.array(geometry.resize, dtype=np.str_),
        "crop_margin": np.array(geometry.crop_margin, dtype=np.float64),
    }


def geometry_of_arrays(arrays: Mapping[str, Any]) -> Geometry:
    """The geometry model-input arrays were made with, from ``x_train`` and :data:`ARRAY_KEYS`.

    Arrays made before ``resize`` existed have no such key: ``stretch``.
    """
    shape = arrays["x_train"].shape
    resize = str(np.asarray(arrays["resize"]).item()) if "resize" in arrays else "stretch"
    margin = float(np.asarray(arrays["crop_margin"]).item()) if "crop_margin" in arrays else 0.0
    return Geometry(int(shape[1]), int(shape[2]), resize, margin)


def as_size(value: Any, name: str = "image_size") -> tuple[int, int]:
    """``(height, width)`` from one positive int (a square) or a pair of positive ints.

    Args:
        value: An int, or a sequence ``[height, width]``.
        name: The parameter named in the error.

    Returns:
        ``(height, width)`` as ints.

    Raises:
        ValueError: ``value`` is neither.
    """
    dims = [value, value] if _is_int(value) else value
    if (
        isinstance(dims, str | bytes | Mapping)
        or not hasattr(dims, "__len__")
        or len(dims) != 2
        or not all(_is_int(v) and v > 0 for v in dims)
    ):
        raise ValueError(
            f"{name} must be a positive int (a square) or [height, width] of two positive "
            f"ints, got {value!r}"
        )
    return int(dims[0]), int(dims[1])


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def fit_image(array: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Bring a decoded image to the model's input: the one function every caller uses.

    Args:
        array: ``uint8`` array ``(H, W, 1)`` or ``(H, W, 3)`` from
            :func:`~breast_cancer_pipeline.imaging.decode_image`.
        geometry: The input size and resize mode.

    Returns:
        A new ``uint8`` array ``(geometry.height, geometry.width, C)``.

    Raises:
        ValueError: The array is not a ``uint8`` image.
    """
    if geometry.resize == "stretch":
        return resize_image(array, geometry.size)
    if geometry.resize == "crop_foreground":
        top, bottom, left, right = foreground_box(array, geometry.crop_margin)
        array = array[top:bottom, left:right]
    return letterbox(array, geometry.size)


def letterbox(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Scale ``array`` to fit inside ``size`` with its aspect kept, centred, padded with 0.

    Args:
        array: ``uint8`` array ``(H, W, C)``.
        size: ``(height, width)`` of the result.

    Returns:
        A new ``uint8`` array ``(height, width, C)``.
    """
    height, width = size
    top, left, *inner = letterbox_box(array.shape, size)
    scaled = resize_image(array, tuple(inner))
    if tuple(inner) == (height, width):
        return scaled
    out = np.zeros((height, width, array.shape[2]), dtype=np.uint8)
    out[top : top + inner[0], left : left + inner[1]] = scaled
    return out


def letterbox_box(shape: tuple[int, ...], size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Where :func:`letterbox` puts an image of ``shape`` inside ``size``.

    Args:
        shape: The image's shape, ``(H, W, ...)``.
        size: ``(height, width)`` of the letterboxed result.

    Returns:
        ``(top, left, height, width)`` of the scaled image within the result.
    """
    height, width = size
    rows, cols = int(shape[0]), int(shape[1])
    scale = min(height / rows, width / cols)
    inner = (min(height, max(1, round(rows * scale))), min(width, max(1, round(cols * scale))))
    return (height - inner[0]) // 2, (width - inner[1]) // 2, inner[0], inner[1]


def foreground_box(array: np.ndarray, margin: float = 0.0) -> tuple[int, int, int, int]:
    """The bounding box of an image's foreground: ``(top, bottom, left, right)``, ends excluded.

    The image is shrunk to at most :data:`ANALYSIS_SIDE` px on its long side and reduced to
    grey; Otsu's threshold splits it in two classes, and the background is the class that holds
    most of the border (dark around a mammogram, bright around a microscopy field). The
    foreground mask is opened (thin lines such as a film edge removed) and its largest region,
    with any other region at least a quarter of its area, gives the box. The box is widened by
    ``margin`` of the image's height and width on each side and clipped to the image.

    Args:
        array: ``uint8`` array ``(H, W, C)``.
        margin: Fraction of the image side added on each side of the box.

    Returns:
        Row and column bounds; the whole image when no foreground is found (a flat image).
    """
    rows, cols = array.shape[:2]
    mask = foreground_mask(array)
    if mask is None:
        return 0, rows, 0, cols
    small_size = mask.shape
    found_rows, found_cols = np.nonzero(mask)
    dy, dx = rows / small_size[0], cols / small_size[1]
    pad_y, pad_x = round(margin * rows), round(margin * cols)
    return (
        max(0, int(np.floor(found_rows.min() * dy)) - pad_y),
        min(rows, int(np.ceil((found_rows.max() + 1) * dy)) + pad_y),
        max(0, int(np.floor(found_cols.min() * dx)) - pad_x),
        min(cols, int(np.ceil((found_cols.max() + 1) * dx)) + pad_x),
    )


def foreground_mask(array: np.ndarray) -> np.ndarray | None:
    """The foreground of an image, on a copy at most :data:`ANALYSIS_SIDE` px on its long side.

    Otsu's threshold on the grey copy; the background is the class that holds most of the
    border; thin lines and small regions are left out (see :func:`foreground_box`).

    Args:
        array: ``uint8`` array ``(H, W, C)``.

    Returns:
        A boolean mask of the small copy's shape, or None when the image is flat.
    """
    rows, cols = array.shape[:2]
    scale = min(1.0, ANALYSIS_SIDE / max(rows, cols))
    small_size = (max(1, round(rows * scale)), max(1, round(cols * scale)))
    return _foreground_mask(resize_image(array, small_size).mean(axis=2))


def _foreground_mask(gray: np.ndarray) -> np.ndarray | None:
    """The kept regions of the foreground of a small grey image, or None (no foreground)."""
    from scipy import ndimage  # noqa: PLC0415 - only a crop needs it

    threshold = otsu_threshold(gray)
    if threshold is None:
        return None
    mask = _opened(gray > threshold)
    border = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
    if border.mean() > 0.5:  # the bright class surrounds the image: it is the background
        mask = _opened(gray <= threshold)
    labels, n = ndimage.label(mask)
    if n == 0:
        return None
    areas = np.bincount(labels.ravel())[1:]
    kept = np.flatnonzero(areas >= _KEEP_SHARE * areas.max()) + 1
    return np.isin(labels, kept)


def _opened(mask: np.ndarray) -> np.ndarray:
    """``mask`` without lines and specks thinner than the opening (kept whole if none is wider)."""
    from scipy import ndimage  # noqa: PLC0415 - only a crop needs it

    opened = ndimage.binary_opening(mask, np.ones((3, 3), bool), iterations=_OPENINGS)
    return opened if opened.any() else mask


def otsu_threshold(gray: np.ndarray) -> float | None:
    """Otsu's threshold of grey values in 0..255: the one that best separates two classes.

    Args:
        gray: Grey values (any shape), within 0..255.

    Returns:
        The threshold ``t`` (the foreground is ``gray > t``), or None when every value is equal.
    """
    if gray.dtype != np.uint8:
        gray = np.clip(np.rint(gray), 0, 255).astype(np.uint8)
    hist = np.bincount(gray.ravel(), minlength=256).astype(np.float64)
    levels = np.arange(256, dtype=np.float64)
    below = np.cumsum(hist)[:-1]
    above = gray.size - below
    if not (below * above).any():
        return None
    sum_below = np.cumsum(hist * levels)[:-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_below = sum_below / below
        mean_above = (sum_below[-1] + hist[-1] * 255 - sum_below) / above
        between = below * above * (mean_below - mean_above) ** 2
    return float(np.nanargmax(np.where(below * above > 0, between, np.nan)))
