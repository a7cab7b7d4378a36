"""The served model: the classifier, its compiled forward pass and its operating point.

:class:`ServingModel` is what the ``inference`` pipeline (batch command and MLflow endpoint)
scores images with. It bundles

* the trained Keras classifier (``uint8`` images in, softmax out; all preprocessing inside),
* the decoding settings the classifier was trained with (image size, colour mode),
* the operating point chosen on the validation split (positive class, threshold),

and runs the model through one ``tf.function`` with a fixed input signature instead of
``model.predict``: ``predict`` rebuilds its data pipeline on every call, which costs several
milliseconds per request (MLflow's own Keras pyfunc does exactly that, see mlflow issue 5259).

:func:`image_bytes` turns one cell of a request (base64 text, raw bytes, or a loader returning
bytes) into file bytes for :func:`breast_cancer_pipeline.imaging.decode_image`.

TensorFlow is imported only when a model is run, so importing this module is cheap.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from breast_cancer_pipeline.imaging import COLOR_MODES, ImageDecodeError

#: Keys of the serving configuration (``serving.json`` beside the model).
CONFIG_KEYS = (
    "class_names",
    "image_size",
    "channels",
    "color_mode",
    "positive_class",
    "threshold",
)

_FIX_REQUEST = (
    "Send the whole image file (PNG, JPEG, TIFF or DICOM) base64-encoded in the 'image' column, "
    "e.g. $(base64 -w0 image.png)"
)


def check_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a serving configuration.

    Args:
        config: Mapping with the :data:`CONFIG_KEYS`.

    Returns:
        A plain ``dict`` copy (extra keys kept) with ``image_size``/``channels`` as ints and
        ``threshold`` a float.

    Raises:
        ValueError: A key is missing or a value is out of range.
    """
    missing = [k for k in CONFIG_KEYS if k not in config]
    if missing:
        raise ValueError(f"serving configuration lacks {missing}: re-run the reporting pipeline")
    out = dict(config)
    out["class_names"] = [str(c) for c in config["class_names"]]
    out["image_size"], out["channels"] = int(config["image_size"]), int(config["channels"])
    out["threshold"] = float(config["threshold"])
    if out["positive_class"] not in out["class_names"]:
        raise ValueError(
            f"positive class {out['positive_class']!r} is not one of {out['class_names']} "
            "(parameter reporting.positive_class)"
        )
    if out["color_mode"] not in COLOR_MODES:
        raise ValueError(f"color_mode must be one of {COLOR_MODES}, got {out['color_mode']!r}")
    if not 0.0 <= out["threshold"] <= 1.0:
        raise ValueError(f"threshold must be within [0, 1], got {out['threshold']}")
    return out


class ServingModel:
    """A trained classifier ready to score decoded images.

    Attributes:
        model: The Keras classifier.
        config: The checked serving configuration (see :data:`CONFIG_KEYS`).
    """

    def __init__(self, model: Any, config: Mapping[str, Any]) -> None:
        """Wrap ``model`` with its serving ``config``.

        Raises:
            ValueError: The configuration is invalid or does not match the model's input.
        """
        self.model = model
        self.config = check_config(config)
        expected = (self.config["image_size"], self.config["image_size"], self.config["channels"])
        if tuple(model.input_shape[1:]) != expected:
            raise ValueError(
                f"the model takes images of shape {tuple(model.input_shape[1:])} but the "
                f"serving configuration says {expected}"
            )
        self._forward = None

    def __deepcopy__(self, memo: dict) -> ServingModel:
        # kedro-mlflow deep-copies its in-memory catalog on every request: share the model.
        return self

    @property
    def class_names(self) -> list[str]:
        """The model's classes, in output order."""
        return self.config["class_names"]

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities for a batch of decoded, resized images.

        Args:
            images: ``uint8`` array ``(N, size, size, channels)``.

        Returns:
            ``float32`` array ``(N, n_classes)``.
        """
        if len(images) == 0:
            return np.empty((0, len(self.class_names)), dtype=np.float32)
        if self._forward is None:
            self._forward = compiled_forward(self.model)
        return np.asarray(self._forward(np.ascontiguousarray(images, dtype=np.uint8)))


def compiled_forward(model: Any) -> Any:
    """One ``tf.function`` of the model in inference mode, traced once for any batch size.

    Args:
        model: A Keras model with a single ``uint8`` image input.

    Returns:
        A callable from a ``uint8`` batch to the model's output tensor.
    """
    import tensorflow as tf

    spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.uint8)

    @tf.function(input_signature=[spec], reduce_retracing=True)
    def forward(images: Any) -> Any:
        return model(images, training=False)

    return forward


def image_bytes(value: Any, name: str = "") -> bytes:
    """The file bytes held by one ``image`` cell of a request.

    Args:
        value: base64 text (optionally a ``data:...;base64,`` URL), raw bytes, or a
            zero-argument callable returning bytes (the batch command's lazy file loaders).
        name: Row name used in error messages.

    Returns:
        The file's bytes.

    Raises:
        ImageDecodeError: The cell is empty or not valid base64.
    """
    if callable(value):
        return value()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise ImageDecodeError(name, "no image in this row", fix=_FIX_REQUEST)
    if not isinstance(value, str):
        raise ImageDecodeError(
            name, "not base64 text", f"got a {type(value).__name__}", fix=_FIX_REQUEST
        )
    text = value.strip()
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageDecodeError(name, "not valid base64", str(exc), fix=_FIX_REQUEST) from None
