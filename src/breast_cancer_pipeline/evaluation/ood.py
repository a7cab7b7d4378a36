"""The out-of-distribution score shipped with the served model, and images to test it with.

The score reads the classifier's penultimate features (the input of its last ``Dense``
layer), taken from the forward pass that gives the probabilities; higher means further from
the training data. :func:`fit_ood` fits one of :data:`METHODS` on the training split:

* ``mahalanobis`` (Lee et al. 2018): the squared Mahalanobis distance to the nearest class
  mean, with one shared Ledoit-Wolf covariance, on :func:`normalise_features`;
* ``energy`` (Liu et al. 2020): ``-logsumexp(logits)``, the logits recomputed from the
  features with the last layer's kernel and bias.

:meth:`OodScore.threshold` accepts a share of the validation split
(``inference.serving.ood.accept_rate``); :meth:`OodScore.to_arrays` and
:meth:`OodScore.from_arrays` are the content of ``ood.npz`` (plain arrays, loaded without
pickle). :func:`ood_images` makes a synthetic out-of-distribution set of :data:`KINDS`,
deterministic from a seed.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: The methods :func:`fit_ood` knows.
METHODS = ("mahalanobis", "energy")
#: The method of the served score.
METHOD = "mahalanobis"
#: The kinds of :func:`ood_images`, in report order.
KINDS = ("noise", "gradient", "text", "blank", "chest_xray", "ct_slice")


@dataclass(frozen=True)
class OodScore:
    """A fitted out-of-distribution score and the validation scores that set its threshold.

    Attributes:
        method: One of :data:`METHODS`.
        val_scores: Scores of the validation split (sorted), whose quantile is the threshold.
        means: ``(k, d)`` class means of the (normalised) training features (``mahalanobis``).
        basis: ``(r, d)`` orthonormal directions in which the shared covariance exceeds its
            smallest eigenvalue ``floor`` (``mahalanobis``).
        weights: ``(r,)`` precision in those directions minus ``1 / floor`` (``mahalanobis``).
        floor: Smallest eigenvalue of the shared covariance (``mahalanobis``).
        kernel: ``(d, k)`` kernel of the last layer (``energy``).
        bias: ``(k,)`` bias of the last layer (``energy``).
    """

    method: str
    val_scores: np.ndarray
    means: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    basis: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    weights: np.ndarray = field(default_factory=lambda: np.zeros(0))
    floor: float = 1.0
    kernel: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    bias: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def score(self, features: np.ndarray) -> np.ndarray:
        """The score of each feature row (higher: further from the training data).

        Args:
            features: ``(n, d)`` penultimate features.

        Returns:
            ``float64`` array ``(n,)``.
        """
        features = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
        if self.method == "mahalanobis":
            return self._mahalanobis(normalise_features(features)).min(axis=1)
        logits = features @ self.kernel + self.bias
        top = logits.max(axis=1)
        return -(top + np.log(np.exp(logits - top[:, None]).sum(axis=1)))

    def _mahalanobis(self, x: np.ndarray) -> np.ndarray:
        """``(n, k)`` squared distances ``(x - m)^T P (x - m)`` to each class mean ``m``.

        The precision is ``P = I / floor + basis^T diag(weights) basis``: Ledoit-Wolf shrinks
        towards a multiple of the identity, so beyond the rank of the training features every
        direction has the same variance. A request costs ``d * (r + k)`` products, not
        ``d * d``.
        """
        centres = self._projected_means
        sq = (x**2).sum(axis=1)[:, None] - 2 * x @ self.means.T + (self.means**2).sum(axis=1)
        along = ((x @ self.basis.T)[:, None, :] - centres[None, :, :]) ** 2
        return np.maximum(sq / self.floor + (along * self.weights).sum(axis=-1), 0.0)

    @functools.cached_property
    def _projected_means(self) -> np.ndarray:
        return self.means @ self.basis.T

    def threshold(self, accept_rate: float) -> float:
        """The score at or below which an image counts as in-distribution.

        Args:
            accept_rate: Share of validation images to accept, in (0, 1]
                (``inference.serving.ood.accept_rate``).
        """
        # The smallest validation score with at least ``accept_rate`` of them at or below it.
        return float(np.quantile(self.val_scores, accept_rate, method="inverted_cdf"))

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The fitted statistics as plain arrays (the content of ``ood.npz``)."""
        return {
            "method": np.array(self.method),
            "val_scores": self.val_scores,
            "means": self.means,
            "basis": self.basis,
            "weights": self.weights,
            "floor": np.array(self.floor),
            "kernel": self.kernel,
            "bias": self.bias,
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> OodScore:
        """The score saved by :meth:`to_arrays`.

        Raises:
            ValueError: An array is missing or the method is unknown.
        """
        missing = [k for k in ("method", "val_scores") if k not in arrays]
        method = str(arrays["method"]) if not missing else ""
        if missing or method not in METHODS:
            raise ValueError(
                f"not an out-of-distribution score (missing {missing}, method {method!r}): "
                "re-run the reporting pipeline to refit it"
            )
        names = ("means", "basis", "weights")
        return cls(
            method,
            np.asarray(arrays["val_scores"]),
            *(np.asarray(arrays[k]) for k in names),
            floor=float(arrays["floor"]),
            kernel=np.asarray(arrays["kernel"]),
            bias=np.asarray(arrays["bias"]),
        )


def fit_ood(
    method: str,
    train_features: np.ndarray,
    train_labels: np.ndarray,
    val_features: np.ndarray,
    last_layer: tuple[np.ndarray, np.ndarray] | None = None,
) -> OodScore:
    """Fit the score on the training split and score the validation split for the threshold.

    Args:
        method: One of :data:`METHODS`.
        train_features: ``(n, d)`` penultimate features of the training images.
        train_labels: ``(n,)`` integer classes of the training images.
        val_features: ``(m, d)`` penultimate features of the validation images.
        last_layer: ``(kernel, bias)`` of the classifier's last layer (needed by ``energy``).

    Returns:
        The fitted :class:`OodScore`.

    Raises:
        ValueError: Unknown method, ``energy`` without ``last_layer``, or a class with no
            training image.
    """
    if method not in METHODS:
        raise ValueError(f"unknown out-of-distribution method {method!r}: use one of {METHODS}")
    train = np.asarray(train_features, dtype=np.float64).reshape(len(train_features), -1)
    if method == "energy":
        if last_layer is None:
            raise ValueError("the energy score needs the last layer's kernel and bias")
        fitted = OodScore("energy", np.zeros(0), kernel=last_layer[0], bias=last_layer[1])
    else:
        fitted = _fit_mahalanobis(normalise_features(train), np.asarray(train_labels))
    return dataclasses.replace(fitted, val_scores=np.sort(fitted.score(val_features)))


def normalise_features(features: np.ndarray) -> np.ndarray:
    """Signed square root, then unit L2 norm per row (what the Mahalanobis score sees).

    As in Mahalanobis++ (Mueller et al. 2025).

    Args:
        features: ``(n, d)`` penultimate features.

    Returns:
        ``float64`` array ``(n, d)``; an all-zero row stays zero.
    """
    rooted = np.sign(features) * np.sqrt(np.abs(features))
    norms = np.linalg.norm(rooted, axis=1, keepdims=True)
    return rooted / np.maximum(norms, 1e-12)


def _fit_mahalanobis(features: np.ndarray, labels: np.ndarray) -> OodScore:
    from sklearn.covariance import LedoitWolf

    classes = np.unique(labels)
    if len(classes) < 1 or len(classes) != labels.max() + 1:
        raise ValueError(
            f"every class needs training images to fit the Mahalanobis score; got {classes}"
        )
    means = np.stack([features[labels == k].mean(axis=0) for k in classes])
    centred = features - means[labels]
    covariance = LedoitWolf(assume_centered=True).fit(centred).covariance_
    eigenvalues, vectors = np.linalg.eigh((covariance + covariance.T) / 2)
    floor = float(eigenvalues.min())
    above = eigenvalues > floor * (1 + 1e-9)
    return OodScore(
        "mahalanobis",
        np.zeros(0),
        means=means,
        basis=vectors[:, above].T.copy(),
        weights=1.0 / eigenvalues[above] - 1.0 / floor,
        floor=floor,
    )


# ------------------------------------------------------------------------------ images
def ood_images(
    n_per_kind: int, size: int | tuple[int, int], channels: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-distribution images for a breast-image classifier, the same for the same seed.

    Args:
        n_per_kind: Images of each of :data:`KINDS`.
        size: Side of square images, or ``(height, width)``: the images are drawn as squares
            of the longer side and resized to it.
        channels: 1 (grayscale) or 3 (RGB, the grey image repeated; noise is coloured).
        seed: Seed of ``numpy.random.default_rng``.

    Returns:
        ``(images, kinds)``: ``uint8`` array ``(n_per_kind * len(KINDS), height, width,
        channels)`` and the kind of each image.
    """
    from breast_cancer_pipeline.geometry import as_size  # noqa: PLC0415
    from breast_cancer_pipeline.imaging import resize_image  # noqa: PLC0415

    height, width = as_size(size)
    rng = np.random.default_rng(seed)
    images, kinds = [], []
    for kind in KINDS:
        for _ in range(n_per_kind):
            image = _MAKERS[kind](rng, max(height, width))
            if height != width:
                image = resize_image(image, (height, width))
            if channels == 3:
                image = np.repeat(image, 3, axis=-1)
                if kind == "noise":
                    image = rng.integers(0, 256, image.shape, dtype=np.uint8)
            images.append(image)
            kinds.append(kind)
    shape = (0, height, width, channels)
    return (np.stack(images) if images else np.zeros(shape, np.uint8)), np.array(kinds)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates scaled to [-1, 1]."""
    axis = np.linspace(-1.0, 1.0, size)
    return np.meshgrid(axis, axis, indexing="ij")


def _finish(values: np.ndarray, rng: np.random.Generator, blur: float = 0.0) -> np.ndarray:
    from PIL import Image, ImageFilter

    image = Image.fromarray(np.clip(values, 0, 255).astype(np.uint8))
    if blur:
        image = image.filter(ImageFilter.GaussianBlur(blur * image.width / 128))
    return np.asarray(image)[..., None]


def _noise(rng: np.random.Generator, size: int) -> np.ndarray:
    style = rng.integers(3)
    if style == 0:  # uniform white noise
        return rng.integers(0, 256, (size, size, 1), dtype=np.uint8)
    if style == 1:  # Gaussian noise around a random grey
        values = rng.normal(rng.uniform(60, 200), rng.uniform(20, 70), (size, size))
        return _finish(values, rng)
    salt = rng.random((size, size)) < rng.uniform(0.05, 0.3)  # salt and pepper on black
    return _finish(np.where(salt, 255.0, 0.0), rng)


def _gradient(rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = _grid(size)
    low = rng.uniform(0, 150)
    high = rng.uniform(low + 100, 255)
    if rng.random() < 0.5:  # linear, any direction
        angle = rng.uniform(0, 2 * np.pi)
        ramp = (np.cos(angle) * xx + np.sin(angle) * yy + 1.5) / 3.0
    else:  # radial from a random centre
        cy, cx = rng.uniform(-0.8, 0.8, 2)
        ramp = np.clip(np.hypot(yy - cy, xx - cx) / 2.0, 0, 1)
    return _finish(low + (high - low) * ramp, rng)


def _text(rng: np.random.Generator, size: int) -> np.ndarray:
    from PIL import Image, ImageDraw

    canvas = 256  # Pillow's default bitmap font is ~11 px: draw large, then resize
    paper, ink = (255, 0) if rng.random() < 0.7 else (0, 255)
    image = Image.new("L", (canvas, canvas), int(paper))
    draw = ImageDraw.Draw(image)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz0123456789    .,"))
    y = int(rng.integers(4, 20))
    while y < canvas - 12:
        line = "".join(rng.choice(letters, int(rng.integers(20, 42))))
        draw.text((int(rng.integers(2, 16)), y), line, fill=int(ink))
        y += int(rng.integers(12, 20))
    return np.asarray(image.resize((size, size), Image.Resampling.BILINEAR))[..., None]


def _blank(rng: np.random.Generator, size: int) -> np.ndarray:
    level = rng.choice([0, 255, int(rng.integers(1, 255))])
    return np.full((size, size, 1), level, dtype=np.uint8)


def _chest_xray(rng: np.random.Generator, size: int) -> np.ndarray:
    """A frontal chest radiograph lookalike: bright body, dark lungs, ribs, spine."""
    yy, xx = _grid(size)
    body = ((xx / rng.uniform(0.8, 0.95)) ** 2 + ((yy - 0.1) / 1.1) ** 2) < 1
    values = np.where(body, rng.uniform(150, 200), rng.uniform(0, 25))
    for side in (-1, 1):
        cx, ry = side * rng.uniform(0.35, 0.45), rng.uniform(0.5, 0.62)
        lung = ((xx - cx) / rng.uniform(0.25, 0.32)) ** 2 + ((yy + 0.05) / ry) ** 2 < 1
        ribs = 0.5 + 0.5 * np.cos((yy * rng.uniform(9, 12) + np.abs(xx - cx) * 2.5) * np.pi)
        values = np.where(lung, rng.uniform(40, 80) + 45 * (ribs > 0.8), values)
    spine = np.abs(xx) < rng.uniform(0.06, 0.1)
    values = np.where(spine & body, values + 50, values)
    return _finish(values + rng.normal(0, 4, values.shape), rng, blur=1.2)


def _ct_slice(rng: np.random.Generator, size: int) -> np.ndarray:
    """An axial CT slice lookalike: black air, soft-tissue disc, bone ring, organs, vertebra."""
    yy, xx = _grid(size)
    ax, ay = rng.uniform(0.75, 0.9), rng.uniform(0.55, 0.7)
    radius = (xx / ax) ** 2 + (yy / ay) ** 2
    values = np.where(radius < 1, rng.uniform(95, 120), 0.0)
    values = np.where((radius < 1) & (radius > 0.88), 235.0, values)  # ribs / skull ring
    for _ in range(int(rng.integers(2, 5))):  # organs
        cy, cx, r = rng.uniform(-0.3, 0.3), rng.uniform(-0.5, 0.5), rng.uniform(0.1, 0.25)
        values = np.where(np.hypot(yy - cy, xx - cx) < r, rng.uniform(60, 160), values)
    vertebra = np.hypot(yy - ay * 0.6, xx) < rng.uniform(0.08, 0.12)
    values = np.where(vertebra, 250.0, values)
    return _finish(values + rng.normal(0, 6, values.shape), rng, blur=0.6)


_MAKERS: dict[str, Any] = {
    "noise": _noise,
    "gradient": _gradient,
    "text": _text,
    "blank": _blank,
    "chest_xray": _chest_xray,
    "ct_slice": _ct_slice,
}
