"""Stain normalisation and HED colour augmentation of RGB histopathology: the one home.

Both run inside the model as Keras layers (:mod:`breast_cancer_pipeline.modeling` puts them
there), on ``float`` RGB batches ``(N, H, W, 3)`` of 0..255 pixels, so the served model, the
batch command and the ONNX and LiteRT exports do what training did:

* :class:`StainNormalization` (``augmentation.stain.normalize``), at training and inference:

  - ``reinhard`` (Reinhard et al. 2001): each image's CIELAB channels shifted and scaled to
    the reference's means and standard deviations.
  - ``macenko`` (Macenko et al. 2009, as torchstain and the authors' code run it): optical
    densities ``-log((I + 1) / 240)``; the pixels with every density at least 0.15; the plane
    of the two largest eigenvectors of their covariance; the stain vectors at the 1st and 99th
    percentiles of the pixels' angles in that plane (haematoxylin the one with the larger red
    density); each pixel's two concentrations by least squares, scaled so that their 99th
    percentiles are the reference's, and recombined with the reference's stain vectors. An
    image without two stains' worth of tissue pixels (a blank tile) passes unchanged.

  The graph holds no eigendecomposition operator (tf2onnx and LiteRT's builtin operators have
  none): the covariance is 3x3, so its eigenvectors are solved in closed form
  (:func:`symmetric_eigenvectors`), and percentiles are a sort.
* :class:`HEDJitter` (``augmentation.stain.jitter``), in training only (inside the augmentation
  block): Tellez et al. 2019's HED augmentation, each image's haematoxylin, eosin and DAB
  channels (scikit-image's ``rgb2hed``, whose units are optical density divided by
  ``ln 10**6``) scaled by ``1 + U(-sigma, sigma)`` and shifted by ``U(-sigma, sigma)``, then
  back to RGB (``hed2rgb``).

The reference is fitted on a sample of the training images (:func:`fit_reference`, the
augmentation stage's ``fit_stain_reference`` node); the layer carries it in its configuration,
saved with the ``.keras`` file.

Importing this module imports Keras (and TensorFlow).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np
from keras import layers, ops

#: Values of ``augmentation.stain.normalize`` (``None``: off).
NORMALIZATIONS = ("macenko", "reinhard")

#: Ruifrok and Johnston's stain optical densities (rows: haematoxylin, eosin, DAB; columns:
#: R, G, B), scikit-image's ``rgb_from_hed``.
RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED)
#: scikit-image's floor of a channel before its logarithm (and its scale of HED values).
_HED_FLOOR = 1e-6

#: sRGB (D65) to CIE XYZ, and the D65 white point (scikit-image's values).
XYZ_FROM_RGB = np.array(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]]
)
RGB_FROM_XYZ = np.linalg.inv(XYZ_FROM_RGB)
_WHITE = np.array([0.95047, 1.0, 1.08883])

#: Macenko's light intensity, density threshold of tissue pixels, angle percentile and
#: concentration percentile (the published method's values).
MACENKO_INTENSITY = 240.0
MACENKO_MIN_DENSITY = 0.15
MACENKO_ANGLE_PERCENTILE = 1.0
MACENKO_MAX_PERCENTILE = 99.0
#: Fewer tissue pixels than this: the image passes unchanged.
MACENKO_MIN_PIXELS = 3

_EPS = 1e-6


def _const(value: Any) -> Any:
    return ops.convert_to_tensor(np.asarray(value, dtype=np.float32))


def _mix(x: Any, matrix: np.ndarray) -> Any:
    """``x @ matrix`` over the last axis (a channel mix)."""
    return ops.matmul(x, _const(matrix))


# ---------------------------------------------------------------- colour spaces


def rgb_to_hed(rgb: Any) -> Any:
    """0..255 RGB to haematoxylin, eosin and DAB, as scikit-image's ``rgb2hed``."""
    x = ops.maximum(ops.cast(rgb, "float32") / 255.0, _HED_FLOOR)
    return ops.maximum(_mix(ops.log(x) / math.log(_HED_FLOOR), HED_FROM_RGB), 0.0)


def hed_to_rgb(hed: Any) -> Any:
    """Haematoxylin, eosin and DAB to 0..255 RGB, as scikit-image's ``hed2rgb``."""
    rgb = ops.exp(_mix(hed * math.log(_HED_FLOOR), RGB_FROM_HED))
    return ops.clip(rgb, 0.0, 1.0) * 255.0


def rgb_to_lab(rgb: Any) -> Any:
    """0..255 sRGB to CIELAB (D65), as scikit-image's ``rgb2lab``."""
    x = ops.cast(rgb, "float32") / 255.0
    linear = ops.where(
        x > 0.04045, ops.power((ops.maximum(x, 0.04045) + 0.055) / 1.055, 2.4), x / 12.92
    )
    xyz = _mix(linear, XYZ_FROM_RGB.T / _WHITE[None, :])
    cube_root = ops.power(ops.maximum(xyz, 0.008856), 1.0 / 3.0)
    f = ops.where(xyz > 0.008856, cube_root, 7.787 * xyz + 16.0 / 116.0)
    fx, fy, fz = f[..., 0], f[..., 1], f[..., 2]
    return ops.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], axis=-1)


def lab_to_rgb(lab: Any) -> Any:
    """CIELAB (D65) to 0..255 sRGB, as scikit-image's ``lab2rgb`` (negative Z clipped)."""
    fy = (lab[..., 0] + 16.0) / 116.0
    f = ops.stack([lab[..., 1] / 500.0 + fy, fy, ops.maximum(fy - lab[..., 2] / 200.0, 0.0)], -1)
    xyz = ops.where(f > 0.2068966, f * f * f, (f - 16.0 / 116.0) / 7.787)
    linear = _mix(xyz, (RGB_FROM_XYZ * _WHITE[None, :]).T)
    gamma = 1.055 * ops.power(ops.maximum(linear, 0.0031308), 1.0 / 2.4) - 0.055
    rgb = ops.where(linear > 0.0031308, gamma, linear * 12.92)
    return ops.clip(rgb, 0.0, 1.0) * 255.0


# ---------------------------------------------------------------- Reinhard


def reinhard_statistics(rgb: Any) -> tuple[Any, Any]:
    """Each image's CIELAB channel means and standard deviations, ``(N, 3)`` each."""
    lab = rgb_to_lab(rgb)
    mean = ops.mean(lab, axis=(1, 2))
    std = ops.sqrt(ops.mean(ops.square(lab - mean[:, None, None, :]), axis=(1, 2)))
    return mean, std


def reinhard(rgb: Any, mean: Sequence[float], std: Sequence[float]) -> Any:
    """Reinhard normalisation of a batch to a reference's CIELAB ``mean`` and ``std``."""
    lab = rgb_to_lab(rgb)
    own_mean, own_std = reinhard_statistics(rgb)
    scale = _const(std) / ops.maximum(own_std, _EPS)
    lab = (lab - own_mean[:, None, None, :]) * scale[:, None, None, :] + _const(mean)
    return lab_to_rgb(lab)


# ---------------------------------------------------------------- Macenko


def symmetric_eigenvectors(matrix: Any) -> tuple[Any, Any]:
    """Unit eigenvectors of the largest and smallest eigenvalues of symmetric 3x3 matrices.

    The trigonometric solution of the characteristic cubic (Smith 1961); each eigenvector is
    the longest cross product of two rows of ``matrix - eigenvalue * I``.

    Args:
        matrix: ``(N, 3, 3)`` symmetric matrices.

    Returns:
        ``(largest, smallest)``, each ``(N, 3)`` (signs arbitrary).
    """
    a = matrix
    q = (a[:, 0, 0] + a[:, 1, 1] + a[:, 2, 2]) / 3.0
    off = ops.square(a[:, 0, 1]) + ops.square(a[:, 0, 2]) + ops.square(a[:, 1, 2])
    diag = ops.square(a[:, 0, 0] - q) + ops.square(a[:, 1, 1] - q) + ops.square(a[:, 2, 2] - q)
    p = ops.maximum(ops.sqrt((diag + 2.0 * off) / 6.0), 1e-12)
    b = (a - q[:, None, None] * _const(np.eye(3))) / p[:, None, None]
    det = (
        b[:, 0, 0] * (b[:, 1, 1] * b[:, 2, 2] - b[:, 1, 2] * b[:, 2, 1])
        - b[:, 0, 1] * (b[:, 1, 0] * b[:, 2, 2] - b[:, 1, 2] * b[:, 2, 0])
        + b[:, 0, 2] * (b[:, 1, 0] * b[:, 2, 1] - b[:, 1, 1] * b[:, 2, 0])
    )
    r = ops.clip(det / 2.0, -1.0, 1.0)
    angle = ops.arctan2(ops.sqrt(ops.maximum(1.0 - r * r, 0.0)), r) / 3.0  # acos(r) / 3
    largest = q + 2.0 * p * ops.cos(angle)
    smallest = q + 2.0 * p * ops.cos(angle + 2.0 * math.pi / 3.0)
    return _null_vector(a, largest), _null_vector(a, smallest)


def _null_vector(matrix: Any, eigenvalue: Any) -> Any:
    """The unit vector orthogonal to the rows of ``matrix - eigenvalue * I``."""
    m = matrix - eigenvalue[:, None, None] * _const(np.eye(3))
    rows = m[:, 0], m[:, 1], m[:, 2]
    best, longest = None, None
    for u, v in ((0, 1), (0, 2), (1, 2)):  # comparisons, not argmax: every runtime has them
        candidate = cross(rows[u], rows[v])
        length = ops.sum(ops.square(candidate), axis=-1, keepdims=True)
        if best is None:
            best, longest = candidate, length
        else:
            best = ops.where(length > longest, candidate, best)
            longest = ops.maximum(length, longest)
    return unit(best)


def cross(u: Any, v: Any) -> Any:
    """Cross products of ``(N, 3)`` vectors (slices and products: every runtime has them)."""
    return ops.stack(
        [
            u[:, 1] * v[:, 2] - u[:, 2] * v[:, 1],
            u[:, 2] * v[:, 0] - u[:, 0] * v[:, 2],
            u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0],
        ],
        axis=-1,
    )


def unit(v: Any) -> Any:
    """``(N, 3)`` vectors scaled to length 1."""
    return v / ops.maximum(ops.sqrt(ops.sum(ops.square(v), axis=-1, keepdims=True)), 1e-20)


def masked_percentiles(values: Any, mask: Any, percents: Sequence[float]) -> list[Any]:
    """Each row's percentiles of the values where ``mask`` is 1 (NumPy's linear rule).

    Args:
        values: ``(N, P)``.
        mask: ``(N, P)`` of 0 and 1; a row with none gives arbitrary values.
        percents: Each 0..100.

    Returns:
        One ``(N,)`` per percent.
    """
    big = ops.max(ops.abs(values)) + 1.0
    ranked = ops.sort(ops.where(mask > 0, values, big), axis=-1)  # unmasked values last
    last = ops.maximum(ops.sum(mask, axis=-1) - 1.0, 0.0)
    index = ops.cast(ops.arange(ops.shape(values)[-1]), "float32")[None, :]

    def at(i: Any) -> Any:
        return ops.sum(ops.where(index == i[:, None], ranked, 0.0), axis=-1)

    found = []
    for percent in percents:
        position = last * (percent / 100.0)
        below = ops.floor(position)
        low, high = at(below), at(ops.minimum(below + 1.0, last))
        found.append(low + (position - below) * (high - low))
    return found


def _densities(rgb: Any) -> Any:
    """Optical densities ``(N, P, 3)`` of a batch."""
    x = ops.cast(rgb, "float32")
    pixels = ops.reshape(x, (ops.shape(x)[0], -1, 3))
    return -ops.log((pixels + 1.0) / MACENKO_INTENSITY)


def macenko_statistics(rgb: Any) -> tuple[Any, Any, Any]:
    """Each image's stain vectors, concentration percentiles and whether it has tissue.

    Returns:
        ``stain_matrix`` ``(N, 3, 2)`` (columns: haematoxylin, eosin optical densities),
        ``max_concentrations`` ``(N, 2)`` (99th percentiles) and ``valid`` ``(N,)`` (1 where
        the image has enough tissue pixels and both percentiles are positive).
    """
    stains, maxima, valid, _ = _macenko(_densities(rgb))
    return stains, maxima, valid


def _macenko(od: Any) -> tuple[Any, Any, Any, Any]:
    """:func:`macenko_statistics` of optical densities ``(N, P, 3)``, and the concentrations."""
    mask = ops.cast(ops.min(od, axis=-1) >= MACENKO_MIN_DENSITY, "float32")
    count = ops.sum(mask, axis=-1)
    mean = ops.sum(od * ops.expand_dims(mask, -1), axis=1) / ops.maximum(count, 1.0)[:, None]
    centred = (od - mean[:, None, :]) * ops.expand_dims(mask, -1)
    covariance = ops.matmul(ops.transpose(centred, (0, 2, 1)), centred)
    covariance = covariance / ops.maximum(count - 1.0, 1.0)[:, None, None]
    largest, smallest = symmetric_eigenvectors(covariance)
    middle = unit(cross(largest, smallest))
    angles = ops.arctan2(ops.sum(od * largest[:, None], -1), ops.sum(od * middle[:, None], -1))
    low, high = masked_percentiles(
        angles, mask, (MACENKO_ANGLE_PERCENTILE, 100.0 - MACENKO_ANGLE_PERCENTILE)
    )

    def direction(angle: Any) -> Any:
        return middle * ops.cos(angle)[:, None] + largest * ops.sin(angle)[:, None]

    v_low, v_high = direction(low), direction(high)
    first = (v_low[:, 0] > v_high[:, 0])[:, None]  # haematoxylin: the larger red density
    stains = ops.stack([ops.where(first, v_low, v_high), ops.where(first, v_high, v_low)], -1)
    concentrations = _concentrations(od, stains)
    everywhere = ops.ones_like(mask)
    maxima = ops.stack(
        [
            masked_percentiles(concentrations[..., k], everywhere, [MACENKO_MAX_PERCENTILE])[0]
            for k in (0, 1)
        ],
        axis=-1,
    )
    enough = ops.cast(count >= MACENKO_MIN_PIXELS, "float32")
    valid = enough * ops.cast(ops.min(maxima, axis=-1) > _EPS, "float32")
    return stains, maxima, valid, concentrations


def _concentrations(od: Any, stains: Any) -> Any:
    """Least-squares concentrations ``(N, P, 2)`` of densities ``od`` in ``stains``."""
    gram = ops.matmul(ops.transpose(stains, (0, 2, 1)), stains)  # (N, 2, 2)
    a, b, d = gram[:, 0, 0], gram[:, 0, 1], gram[:, 1, 1]
    det = ops.maximum(a * d - b * b, 1e-12)
    inverse = ops.stack([ops.stack([d, -b], -1), ops.stack([-b, a], -1)], 1) / det[:, None, None]
    return ops.matmul(ops.matmul(od, stains), inverse)


def macenko(rgb: Any, stain_matrix: Any, max_concentrations: Sequence[float]) -> Any:
    """Macenko normalisation of a batch to a reference's stain vectors and percentiles.

    Args:
        rgb: ``(N, H, W, 3)`` 0..255 pixels.
        stain_matrix: The reference's ``(3, 2)`` stain vectors (haematoxylin, eosin).
        max_concentrations: The reference's two 99th percentiles.

    Returns:
        The normalised batch, ``float32`` 0..255; an image without tissue unchanged.
    """
    x = ops.cast(rgb, "float32")
    _, maxima, valid, concentrations = _macenko(_densities(x))
    scale = _const(max_concentrations)[None] / ops.maximum(maxima, _EPS)
    concentrations = concentrations * scale[:, None, :]
    reference = _const(stain_matrix)
    pixels = MACENKO_INTENSITY * ops.exp(-ops.matmul(concentrations, ops.transpose(reference)))
    normalised = ops.reshape(ops.minimum(pixels, 255.0), ops.shape(x))
    return ops.where(valid[:, None, None, None] > 0, normalised, x)


# ---------------------------------------------------------------- the reference


def fit_reference(images: Any, method: str | None) -> dict[str, Any]:
    """The reference of ``method``: the median of the images' own statistics.

    Args:
        images: ``uint8`` RGB images ``(N, H, W, 3)`` (read a few at a time, at most
            :data:`FIT_PIXELS` pixels).
        method: ``macenko``, ``reinhard`` or ``None``.

    Returns:
        ``{"normalize": method}`` and, for ``reinhard``, ``lab_mean`` and ``lab_std``; for
        ``macenko``, ``stain_matrix`` (3x2, unit columns) and ``max_concentrations``; and
        ``images`` (how many were used). ``{"normalize": None}`` for ``None``.

    Raises:
        ValueError: The images are not RGB, or (``macenko``) none has stained tissue.
    """
    if method is None:
        return {"normalize": None}
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(
            f"augmentation.stain.normalize={method!r} needs RGB images, got images of shape "
            f"{tuple(images.shape[1:])}; set ingestion.color_mode: rgb or normalize: null"
        )
    if method == "reinhard":
        means, stds = _per_image(reinhard_statistics, images)
        return {
            "normalize": method,
            "lab_mean": np.median(means, axis=0).tolist(),
            "lab_std": np.median(stds, axis=0).tolist(),
            "images": len(means),
        }
    stains, maxima, valid = _per_image(macenko_statistics, images)
    if not valid.any():
        raise ValueError(
            f"augmentation.stain.normalize='macenko': none of the {len(valid)} reference "
            f"images has stained tissue (pixels with every optical density >= "
            f"{MACENKO_MIN_DENSITY}); use reinhard or normalize: null"
        )
    kept = valid > 0
    matrix = np.median(stains[kept], axis=0)
    return {
        "normalize": "macenko",
        "stain_matrix": (matrix / np.linalg.norm(matrix, axis=0, keepdims=True)).tolist(),
        "max_concentrations": np.median(maxima[kept], axis=0).tolist(),
        "images": int(kept.sum()),
    }


#: Pixels :func:`fit_reference` computes on at once (a bound on its memory, not a setting).
FIT_PIXELS = 1 << 22


def _per_image(statistics: Any, images: Any) -> list[np.ndarray]:
    """``statistics`` of every image, a few images at a time, each output concatenated."""
    step = max(1, FIT_PIXELS // int(np.prod(images.shape[1:3])))
    parts = [
        statistics(np.asarray(images[i : i + step], np.float32))
        for i in range(0, len(images), step)
    ]
    return [np.concatenate([np.asarray(p[k]) for p in parts]) for k in range(len(parts[0]))]


def reference_sample(n_images: int, wanted: int) -> np.ndarray:
    """Indices of ``wanted`` images spread evenly over ``n_images`` (all when fewer)."""
    return np.unique(np.linspace(0, n_images - 1, min(wanted, n_images)).round().astype(int))


# ---------------------------------------------------------------- the layers


@keras.saving.register_keras_serializable(package="breast_cancer_pipeline")
class StainNormalization(layers.Layer):
    """Reinhard or Macenko normalisation to a fitted reference, at training and inference.

    The reference (:func:`fit_reference`) is part of the layer's configuration, saved with
    the model.
    """

    def __init__(self, reference: Mapping[str, Any], **kwargs: Any) -> None:
        """Create the layer for a reference of :func:`fit_reference`.

        Raises:
            ValueError: The reference's ``normalize`` is not one of :data:`NORMALIZATIONS`.
        """
        super().__init__(**kwargs)
        if reference.get("normalize") not in NORMALIZATIONS:
            raise ValueError(
                f"a stain reference of normalize={reference.get('normalize')!r}; expected one "
                f"of {', '.join(NORMALIZATIONS)}"
            )
        self.reference = dict(reference)

    def call(self, inputs: Any, training: bool = False) -> Any:
        """Normalise a batch of 0..255 RGB images."""
        ref = self.reference
        if ref["normalize"] == "reinhard":
            out = reinhard(inputs, ref["lab_mean"], ref["lab_std"])
        else:
            out = macenko(inputs, ref["stain_matrix"], ref["max_concentrations"])
        return ops.cast(out, self.compute_dtype)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        """The input's shape."""
        return input_shape

    def get_config(self) -> dict[str, Any]:
        """Serialise the layer (with its reference)."""
        return {**super().get_config(), "reference": self.reference}


@keras.saving.register_keras_serializable(package="breast_cancer_pipeline")
class HEDJitter(layers.Layer):
    """Tellez et al.'s HED colour augmentation, only when training.

    Per image, each of the haematoxylin, eosin and DAB channels is scaled by
    ``1 + U(-sigma, sigma)`` and shifted by ``U(-sigma, sigma)``.
    """

    def __init__(self, sigma: float, seed: int | None = None, **kwargs: Any) -> None:
        """Create the layer with strength ``sigma`` (scikit-image's HED units)."""
        super().__init__(**kwargs)
        self.sigma, self.seed = float(sigma), seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs: Any, training: bool = False) -> Any:
        """Jitter a batch of 0..255 RGB images (identity unless ``training``)."""
        if not training:
            return inputs
        shape = (ops.shape(inputs)[0], 1, 1, 3)
        scale = 1.0 + keras.random.uniform(shape, -self.sigma, self.sigma, seed=self.seed_generator)
        shift = keras.random.uniform(shape, -self.sigma, self.sigma, seed=self.seed_generator)
        return ops.cast(hed_to_rgb(rgb_to_hed(inputs) * scale + shift), self.compute_dtype)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        """The input's shape."""
        return input_shape

    def get_config(self) -> dict[str, Any]:
        """Serialise the layer."""
        return {**super().get_config(), "sigma": self.sigma, "seed": self.seed}
