"""The served model: the classifier, its compiled forward pass and its operating point.

:class:`ServingModel` is what the ``inference`` pipeline (batch command and MLflow endpoint)
scores images with. It bundles

* the trained Keras classifier (``uint8`` images in, softmax out; all preprocessing inside),
* the decoding settings the classifier was trained with (image size, colour mode),
* the operating point chosen on the validation split (positive class, threshold),
* what is done to the probabilities (optional keys, :data:`PROBABILITY_DEFAULTS`): the
  test-time augmentation views averaged (``tta``, :mod:`~breast_cancer_pipeline.evaluation.tta`),
  the temperature and floor fitted on validation (``temperature``, ``calibration_floor``,
  :mod:`~breast_cancer_pipeline.evaluation.calibration`) and the conformal threshold of the
  prediction sets (``conformal``, :mod:`~breast_cancer_pipeline.evaluation.conformal`),
* optionally, the fitted out-of-distribution score
  (:class:`~breast_cancer_pipeline.evaluation.ood.OodScore`, ``ood.npz`` beside the model),
  computed on the penultimate features of the same forward pass,

and runs the model through one ``tf.function`` with a fixed input signature instead of
``model.predict``: ``predict`` rebuilds its data pipeline on every call, which costs several
milliseconds per request (MLflow's own Keras pyfunc does exactly that, see mlflow issue 5259).

:func:`image_bytes` turns one cell of a request (base64 text, raw bytes, or a loader returning
bytes) into file bytes for :func:`breast_cancer_pipeline.imaging.decode_image`.

The limits that keep hostile or careless requests from exhausting the server live here too
(parameters ``inference.serving.*``): :func:`check_request` (images per request and request
size, HTTP 413), :func:`row_error` (what a caller reads when an image cannot be used,
without server paths or ingestion's fixes), :func:`request_error` (an error about a whole
request that MLflow's server answers with just its message) and :func:`limit_request_body` (an
ASGI wrapper refusing large bodies before they are read, for a server the project builds
itself). The memory of the decodes is bounded by imaging's
:class:`~breast_cancer_pipeline.decode_budget.DecodeBudget`.

TensorFlow and MLflow are imported only when needed, so importing this module is cheap.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from breast_cancer_pipeline.imaging import COLOR_MODES, ImageDecodeError, ImageTooLargeError

if TYPE_CHECKING:
    from breast_cancer_pipeline.evaluation.ood import OodScore

#: Keys of the serving configuration (``serving.json`` beside the model).
CONFIG_KEYS = (
    "class_names",
    "image_size",
    "channels",
    "color_mode",
    "positive_class",
    "threshold",
)

#: Optional keys of the serving configuration and their value when absent: a model packaged
#: before test-time augmentation, recalibration and prediction sets existed is served as it
#: was (one view, ``T = 1``) and answers ``prediction_set`` with null.
PROBABILITY_DEFAULTS: dict[str, Any] = {
    "tta": {"mode": "off", "passes": 1, "shift": 0.05},
    "temperature": 1.0,
    "calibration_floor": 0.0,
    "conformal": None,
}

_FIX_REQUEST = (
    "Send the whole image file (PNG, JPEG, TIFF or DICOM) base64-encoded in the 'image' column, "
    "e.g. $(base64 -w0 image.png)"
)
_FIX_FILE = "Re-export the file from its source, or remove it from the folder"

#: What the caller of the served model (or of the batch command) can do about a problem, by
#: :attr:`~breast_cancer_pipeline.imaging.ImageDecodeError.reason`; other problems get
#: :data:`_FIX_REQUEST` (a request) or :data:`_FIX_FILE` (a file).
_FIXES = {
    "decompression bomb": "Downsample the image before sending it",
    "file too large": "Send a smaller file (e.g. a compressed DICOM or a downsampled PNG)",
    "unsupported 16-bit colour image": "Convert it to 8-bit RGB or to 16-bit grayscale",
    "unsupported pixel mode": "Convert it to 8-bit grayscale or RGB",
    "DICOM without pixel data": "Send an image, not a DICOM report or presentation state",
    "page out of range": "Send a file holding the image as its first page",
}


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
    return _check_probability_keys(out)


def _check_probability_keys(config: dict[str, Any]) -> dict[str, Any]:
    """Fill in and check the optional keys of :data:`PROBABILITY_DEFAULTS`."""
    from breast_cancer_pipeline.evaluation.calibration import check_floor  # noqa: PLC0415
    from breast_cancer_pipeline.evaluation.tta import views  # noqa: PLC0415

    for key, default in PROBABILITY_DEFAULTS.items():
        config.setdefault(key, default)
    tta = {**PROBABILITY_DEFAULTS["tta"], **config["tta"]}
    tta["passes"], tta["shift"] = int(tta["passes"]), float(tta["shift"])
    views(tta["mode"], tta["passes"])
    config["tta"], config["temperature"] = tta, float(config["temperature"])
    if not config["temperature"] > 0:
        raise ValueError(f"temperature must be positive, got {config['temperature']}")
    config["calibration_floor"] = check_floor(config["calibration_floor"])
    conformal = config["conformal"]
    if conformal is not None and not 0.0 <= float(conformal.get("threshold", -1)) <= 1.0:
        raise ValueError(f"conformal needs a threshold within [0, 1], got {conformal}")
    return config


class ServingModel:
    """A trained classifier (or an ensemble of them) ready to score decoded images.

    An ensemble (``evaluation.ensemble``: the fold models of cross-validation) is a list of
    classifiers whose probabilities are averaged, not one merged Keras graph: each member
    stays a classifier of :func:`~breast_cancer_pipeline.modeling.build_classifier`, so
    Grad-CAM and the penultimate features work on :attr:`model` as for a single classifier.

    Attributes:
        model: The Keras classifier (with an ensemble, its first member): the one Grad-CAM
            explains, whose features are read and which TF Serving exports.
        members: Every classifier averaged by :meth:`predict_proba`, :attr:`model` first.
        config: The checked serving configuration (see :data:`CONFIG_KEYS`).
        ood: The fitted out-of-distribution score, or ``None`` (a model packaged without one).
    """

    def __init__(
        self,
        model: Any,
        config: Mapping[str, Any],
        members: Sequence[Any] = (),
        ood: OodScore | None = None,
    ) -> None:
        """Wrap ``model``, the other ensemble ``members`` and the ``ood`` score with ``config``.

        Raises:
            ValueError: The configuration is invalid or does not match a model's input.
        """
        self.model = model
        self.members = [model, *members]
        self.config = check_config(config)
        expected = (self.config["image_size"], self.config["image_size"], self.config["channels"])
        for member in self.members:
            if tuple(member.input_shape[1:]) != expected:
                raise ValueError(
                    f"the model takes images of shape {tuple(member.input_shape[1:])} but the "
                    f"serving configuration says {expected}"
                )
        self.ood = ood
        self._forwards = None

    def __deepcopy__(self, memo: dict) -> ServingModel:
        # kedro-mlflow deep-copies its in-memory catalog on every request: share the model.
        return self

    @property
    def class_names(self) -> list[str]:
        """The model's classes, in output order."""
        return self.config["class_names"]

    def with_config(self, **changes: Any) -> ServingModel:
        """The same classifier (and compiled forward pass) with some configuration keys changed.

        Raises:
            ValueError: The changed configuration is invalid.
        """
        other = ServingModel(self.model, {**self.config, **changes}, self.members[1:], self.ood)
        other._forwards = self._forwards
        return other

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """The served class probabilities: the single probability path of the project.

        One forward pass per test-time view, averaged in probability space
        (:func:`~breast_cancer_pipeline.evaluation.tta.average_over_views`), then rescaled by
        the temperature and floor
        (:func:`~breast_cancer_pipeline.evaluation.calibration.apply_calibration`). With
        ``tta`` off, ``T = 1`` and no floor it is one forward pass and nothing more.

        Args:
            images: ``uint8`` array ``(N, size, size, channels)``.

        Returns:
            ``float32`` array ``(N, n_classes)``: with an ensemble, the mean of the members'.
        """
        return self.calibrate(self.averaged_proba(images))

    def averaged_proba(self, images: np.ndarray, first: np.ndarray | None = None) -> np.ndarray:
        """:meth:`predict_proba` before the temperature (what the temperature is fitted on).

        Args:
            images: ``uint8`` array ``(N, size, size, channels)``.
            first: The classifier's probabilities of ``images`` themselves when the caller
                has them from its own pass (the original view is then not run again).
        """
        if len(images) == 0:
            return np.empty((0, len(self.class_names)), dtype=np.float32)
        from breast_cancer_pipeline.evaluation.tta import average_over_views  # noqa: PLC0415

        tta = self.config["tta"]
        return average_over_views(
            self._forward_numpy,
            np.ascontiguousarray(images, dtype=np.uint8),
            tta["mode"],
            tta["passes"],
            tta["shift"],
            first=first,
        )

    def calibrate(self, proba: np.ndarray) -> np.ndarray:
        """Probabilities of :meth:`averaged_proba` recalibrated (temperature, then floor)."""
        from breast_cancer_pipeline.evaluation.calibration import apply_calibration  # noqa: PLC0415

        return apply_calibration(
            proba, self.config["temperature"], self.config["calibration_floor"]
        )

    def prediction_sets(self, proba: np.ndarray) -> list[list[str] | None]:
        """The conformal set (class names) of each row of :meth:`predict_proba`'s output.

        Returns:
            One list per row; ``None`` for every row when the model was packaged without a
            conformal threshold (before prediction sets existed).
        """
        if self.config["conformal"] is None:
            return [None] * len(proba)
        from breast_cancer_pipeline.evaluation.conformal import (  # noqa: PLC0415
            prediction_sets,
            set_labels,
        )

        in_set = prediction_sets(proba, self.config["conformal"]["threshold"])
        return set_labels(in_set, self.class_names)

    def forward(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Penultimate features and class probabilities of a batch, from one forward pass.

        With an ensemble, the probabilities are the mean of the members' and the features
        are :attr:`model`'s (the one the out-of-distribution score was fitted on).

        Args:
            images: ``uint8`` array ``(N, size, size, channels)``.

        Returns:
            ``(features, probabilities)``: ``float32`` arrays ``(N, d)`` and ``(N, n_classes)``.
        """
        if len(images) == 0:
            d, n = _feature_width(self.model), len(self.class_names)
            return np.empty((0, d), dtype=np.float32), np.empty((0, n), dtype=np.float32)
        if self._forwards is None:
            self._forwards = [compiled_forward(member) for member in self.members]
        batch = np.ascontiguousarray(images, dtype=np.uint8)
        outputs = [forward(batch) for forward in self._forwards]
        features = np.asarray(outputs[0][0])
        if len(outputs) == 1:
            return features, np.asarray(outputs[0][1])
        return features, np.mean([np.asarray(proba) for _, proba in outputs], axis=0)

    def _forward_numpy(self, images: np.ndarray) -> np.ndarray:
        """The probabilities of one forward pass (a test-time view) of ``images``."""
        return self.forward(images)[1]

    def predict_with_ood(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Served probabilities and out-of-distribution scores of a batch.

        The original view's pass gives both the features and its probabilities; further
        test-time views, if any, add only probabilities.

        Args:
            images: ``uint8`` array ``(N, size, size, channels)``.

        Returns:
            ``(probabilities, scores)``: as :meth:`predict_proba`, and the ``(N,)`` scores of
            :attr:`ood` (``None`` when the model was packaged without one).
        """
        features, proba = self.forward(images)
        served = self.calibrate(self.averaged_proba(images, first=proba))
        return served, self.ood_score(features)

    def ood_score(self, features: np.ndarray) -> np.ndarray | None:
        """The out-of-distribution score of each feature row, or ``None`` without a fitted score.

        Args:
            features: ``(N, d)`` features from :meth:`forward`.
        """
        return None if self.ood is None else self.ood.score(features)


def penultimate_layer(model: Any) -> Any:
    """The classifier's last layer, a ``Dense`` whose input are the penultimate features.

    Raises:
        ValueError: The model does not end with a ``Dense`` layer.
    """
    last = model.layers[-1]
    if type(last).__name__ != "Dense":
        raise ValueError(
            f"the model ends with a {type(last).__name__} layer ({last.name!r}), not a Dense "
            "layer: build it with breast_cancer_pipeline.modeling.build_classifier"
        )
    return last


def _feature_width(model: Any) -> int:
    """Width of the penultimate features, 0 when the model does not end with a ``Dense``."""
    try:
        return int(penultimate_layer(model).input.shape[-1])
    except ValueError:
        return 0


def compiled_forward(model: Any) -> Any:
    """One ``tf.function`` of the model in inference mode, traced once for any batch size.

    It returns the penultimate features (the input of the last ``Dense`` layer) with the
    probabilities, from the same pass: the out-of-distribution score costs no second pass. A
    model that does not end with a ``Dense`` layer (e.g. an average of several) gives
    zero-width features.

    Args:
        model: A Keras model with a single ``uint8`` image input.

    Returns:
        A callable from a ``uint8`` batch to ``(features, probabilities)`` tensors.
    """
    import keras
    import tensorflow as tf

    spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.uint8)
    if _feature_width(model) == 0:

        @tf.function(input_signature=[spec], reduce_retracing=True)
        def forward(images: Any) -> Any:
            proba = model(images, training=False)
            return tf.zeros((tf.shape(images)[0], 0), proba.dtype), proba

        return forward
    both = keras.Model(model.input, [penultimate_layer(model).input, model.output])

    @tf.function(input_signature=[spec], reduce_retracing=True)
    def forward(images: Any) -> Any:
        return both(images, training=False)

    return forward


def image_bytes(value: Any, name: str, *, max_bytes: int) -> bytes:
    """The file bytes held by one ``image`` cell of a request.

    Args:
        value: base64 text (optionally a ``data:...;base64,`` URL), raw bytes, or a
            zero-argument callable returning bytes (the batch command's lazy file loaders).
        name: Row name used in error messages.
        max_bytes: Largest file accepted in a request (``inference.serving.max_image_bytes``),
            checked before base64 decoding; not applied to file loaders.

    Returns:
        The file's bytes.

    Raises:
        ImageDecodeError: The cell is empty, not valid base64 or holds a larger file.
    """
    if callable(value):
        return value()
    size = _payload_size(value)
    if size is not None and size > max_bytes:
        raise ImageDecodeError(
            name,
            "file too large",
            f"{size:,} bytes is more than inference.serving.max_image_bytes = {max_bytes:,}",
        )
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


def _payload_size(value: Any) -> int | None:
    """Bytes of the file a request cell holds (base64 text: estimated from its length)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return len(value)
    if isinstance(value, str):
        return len(value) * 3 // 4
    return None


def row_error(exc: ImageDecodeError, *, from_file: bool) -> str:
    """The message a caller reads for a row whose image cannot be scored.

    Imaging says what is wrong (:attr:`~breast_cancer_pipeline.imaging.ImageDecodeError.problem`);
    the fix is serving's own (not ingestion's ``ingestion.exclude``).

    Args:
        exc: The decoding error.
        from_file: The row is a file of the batch command, not a cell of a request.
    """
    if isinstance(exc, ImageTooLargeError):
        problem = (
            f"cannot decode {exc.name!r}: image too large: {exc.width} × {exc.height} px exceeds "
            f"inference.max_pixels={exc.max_pixels}"
        )
    else:
        problem = exc.problem
    return f"{problem}. {_FIXES.get(exc.reason, _FIX_FILE if from_file else _FIX_REQUEST)}"


def check_request(cells: Sequence[Any], limits: Mapping[str, Any]) -> None:
    """Refuse a request that holds too many images or too many bytes, before decoding any.

    The batch command's rows are file loaders (read ``batch_size`` at a time): not counted.

    Args:
        cells: The ``image`` column of the request.
        limits: The ``inference.serving`` parameters.

    Raises:
        Exception: :func:`request_error` with HTTP status 413, naming the limit.
    """
    sizes = [len(c) for c in cells if isinstance(c, str | bytes | bytearray | memoryview)]
    if len(sizes) > limits["max_images"]:
        raise request_error(
            f"the request holds {len(sizes)} images, more than inference.serving.max_images = "
            f"{limits['max_images']}: send them in several requests",
            status=413,
        )
    if sum(sizes) > limits["max_request_bytes"]:
        raise request_error(_too_large_message(sum(sizes), limits["max_request_bytes"]), 413)


def _too_large_message(size: int, limit: int) -> str:
    # ``size``: the declared or parsed size, or what was read of a chunked body when it passed.
    return (
        f"the request is at least {size:,} bytes, more than "
        f"inference.serving.max_request_bytes = {limit:,}: send fewer or smaller images per "
        "request"
    )


def request_error(message: str, status: int = 400) -> Exception:
    """An error about a whole request, answered with HTTP ``status`` and just ``message``.

    MLflow's scoring server answers an ``MlflowException`` raised by the model with its
    ``get_http_status_code()`` and ``serialize_as_json()``, but prefixes the message with the
    whole request (``Failed to predict data '<dataframe>'``); any other exception becomes a 400
    carrying the server's stack trace. The returned :class:`RequestError` (an
    ``MlflowException`` and a ``ValueError``) serialises the message as written.

    Args:
        message: What was wrong with the request and what to send instead.
        status: 400 (a malformed request) or 413 (too large).
    """
    return _request_error_class()(message, status)


@functools.cache
def _request_error_class() -> type:
    from mlflow.exceptions import MlflowException  # seconds to import: only once needed
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, REQUEST_LIMIT_EXCEEDED

    class RequestError(MlflowException, ValueError):
        def __init__(self, message: str, status: int = 400) -> None:
            code = INVALID_PARAMETER_VALUE if status == 400 else REQUEST_LIMIT_EXCEEDED
            super().__init__(message, error_code=code)
            self.status = status

        def get_http_status_code(self) -> int:
            return self.status

        def serialize_as_json(self) -> str:
            # ``self.message`` may carry MLflow's prefix; ``args[0]`` is the message as raised.
            return json.dumps({"error_code": self.error_code, "message": self.args[0]})

        def __reduce__(self) -> tuple[Any, ...]:
            return (request_error, (self.args[0], self.status))

    RequestError.__module__, RequestError.__qualname__ = __name__, "RequestError"
    return RequestError


def __getattr__(name: str) -> Any:
    # ``serving.RequestError`` without importing MLflow with this module.
    if name == "RequestError":
        return _request_error_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def limit_request_body(app: Callable[..., Any], max_bytes: int) -> Callable[..., Any]:
    """Wrap an ASGI app so that a body over ``max_bytes`` gets HTTP 413 and never reaches it.

    ``mlflow models serve`` builds its app itself and reads the whole body before the model
    sees it; a server the project builds (e.g. around ``mlflow.pyfunc.scoring_server.init``)
    wraps its app with this. A declared ``Content-Length`` over the limit is refused before
    anything is read; a chunked body as soon as the limit is passed. Bodies within the limit
    are passed on whole.

    Args:
        app: An ASGI application.
        max_bytes: ``inference.serving.max_request_bytes``.

    Returns:
        The wrapped ASGI application.
    """

    async def limited(scope: dict, receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length", b"").strip()
        if declared.isdigit() and int(declared) > max_bytes:
            await _send_too_large(send, int(declared), max_bytes)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > max_bytes:
                await _send_too_large(send, size, max_bytes)
                return
        body, replayed = b"".join(chunks), False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await app(scope, replay, send)

    return limited


async def _send_too_large(send: Callable[..., Any], size: int, limit: int) -> None:
    message = _too_large_message(size, limit)
    body = json.dumps({"error_code": "REQUEST_LIMIT_EXCEEDED", "message": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})
