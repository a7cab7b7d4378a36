"""The served model: the classifier, its compiled forward pass and its operating point.

:class:`ServingModel` is what the ``inference`` pipeline (batch command and MLflow endpoint)
scores images with. It bundles

* the trained Keras classifier (``uint8`` images in, softmax out; all preprocessing inside),
* the decoding settings the classifier was trained with (image size, resize mode, colour
  mode: :class:`~breast_cancer_pipeline.geometry.Geometry`),
* the operating point chosen on the validation split (positive class, threshold),
* what is done to the probabilities (optional keys, :data:`PROBABILITY_DEFAULTS`): the
  test-time augmentation views averaged (``tta``, :mod:`~breast_cancer_pipeline.evaluation.tta`),
  the temperature and floor fitted on validation (``temperature``, ``calibration_floor``,
  :mod:`~breast_cancer_pipeline.evaluation.calibration`) and the conformal threshold of the
  prediction sets (``conformal``, :mod:`~breast_cancer_pipeline.evaluation.conformal`),
* for a model trained on tiles, the tiling (``tiles``): its input is then the tile, and an
  image is cut, scored tile by tile and answered as a whole
  (:mod:`~breast_cancer_pipeline.serving.tiling`),
* optionally, the fitted out-of-distribution score
  (:class:`~breast_cancer_pipeline.evaluation.ood.OodScore`, ``ood.npz`` beside the model),
  computed on the penultimate features of the same forward pass,

and runs the model through one ``tf.function`` with a fixed input signature instead of
``model.predict``: ``predict`` rebuilds its data pipeline on every call, which costs several
milliseconds per request (MLflow's own Keras pyfunc does exactly that, see mlflow issue 5259).

TensorFlow is imported only when the model first runs, so importing this module is cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from breast_cancer_pipeline.geometry import Geometry
from breast_cancer_pipeline.imaging import COLOR_MODES
from breast_cancer_pipeline.serving.levels import check_levels
from breast_cancer_pipeline.tiles import TileSpec

if TYPE_CHECKING:
    from breast_cancer_pipeline.evaluation.ood import OodScore
    from breast_cancer_pipeline.serving.tiling import TiledAnswer, TiledImage

#: The attention head's file in a packaged tile model (``tiles.attention_head``).
ATTENTION_HEAD_FILE = "attention_head.keras"

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


def check_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a serving configuration.

    Args:
        config: Mapping with the :data:`CONFIG_KEYS`.

    Returns:
        A plain ``dict`` copy (extra keys kept) with ``channels`` an int, ``threshold`` a
        float, and the input geometry's keys (``image_size``: an int for a square, else
        ``[height, width]``; ``resize``, ``crop_margin``), ``stretch`` for a model packaged
        before resize modes existed; ``levels`` checked
        (:func:`~breast_cancer_pipeline.serving.levels.check_levels`; None when absent);
        ``tiles``, when present and not null, checked and completed
        (:class:`~breast_cancer_pipeline.tiles.TileSpec`: the network's input is then the tile).

    Raises:
        ValueError: A key is missing or a value is out of range.
    """
    missing = [k for k in CONFIG_KEYS if k not in config]
    if missing:
        raise ValueError(f"serving configuration lacks {missing}: re-run the reporting pipeline")
    out = dict(config)
    out["class_names"] = [str(c) for c in config["class_names"]]
    out |= Geometry.from_config(config).config()
    out["channels"] = int(config["channels"])
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
    out["levels"] = check_levels(out.get("levels"), out["positive_class"])
    if out.get("tiles") is not None:
        # Extra keys (the attention head's) are kept beside the tiling's own.
        out["tiles"] = {**out["tiles"], **TileSpec.from_params(out["tiles"]).config()}
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
        exports: The served network in other formats, ``{"onnx": bytes, "litert": bytes}``
            (:mod:`~breast_cancer_pipeline.serving.export`); empty when packaged without.
        attention_head: With ``tiles.aggregation: attention``, the attention-MIL head that
            combines an image's tiles from their penultimate features
            (:mod:`~breast_cancer_pipeline.training.attention`); None without one.
    """

    exports: Mapping[str, bytes] = MappingProxyType({})
    attention_head: Any = None

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
        spec = self.tiles
        size = (spec.size, spec.size) if spec else Geometry.from_config(self.config).size
        expected = (*size, self.config["channels"])
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

    @property
    def tiles(self) -> TileSpec | None:
        """The tiling of a model whose input is the tile (``tiles``), None for whole images."""
        return TileSpec.from_params(self.config.get("tiles"))

    def with_config(self, **changes: Any) -> ServingModel:
        """The same classifier (and compiled forward pass) with some configuration keys changed.

        Raises:
            ValueError: The changed configuration is invalid.
        """
        other = ServingModel(self.model, {**self.config, **changes}, self.members[1:], self.ood)
        other._forwards = self._forwards
        other.exports = self.exports
        other.attention_head = self.attention_head
        return other

    def with_exports(self, exports: Mapping[str, bytes]) -> ServingModel:
        """The same model carrying ``exports`` (see :attr:`exports`), saved beside it."""
        other = self.with_config()
        other.exports = MappingProxyType(dict(exports))
        return other

    def with_attention_head(self, head: Any) -> ServingModel:
        """The same model carrying the attention ``head``, saved beside it.

        The configuration's ``tiles.attention_head`` names the head's file in the package
        (:data:`ATTENTION_HEAD_FILE`).

        Raises:
            ValueError: The model is not a tile model aggregated by ``attention``.
        """
        spec = self.tiles
        if spec is None or spec.aggregation != "attention":
            raise ValueError(
                "an attention head needs a model trained on tiles with "
                "augmentation.tiles.aggregation: attention"
            )
        other = self.with_config(
            tiles={**self.config["tiles"], "attention_head": ATTENTION_HEAD_FILE}
        )
        other.attention_head = head
        return other

    def attended(self, features: np.ndarray, image_index: np.ndarray, n_images: int) -> Any:
        """Image probabilities and tile attention weights from the attention head, if any.

        Args:
            features: ``(n_tiles, d)`` the tiles' penultimate features (:meth:`forward`).
            image_index: ``(n_tiles,)`` each tile's image row.
            n_images: Images.

        Returns:
            ``(image_proba (n_images, k), tile_attention (n_tiles,))``
            (:func:`~breast_cancer_pipeline.training.attention.aggregate_tile_features`), or
            None when the model combines its tiles by another rule or carries no head.
        """
        spec = self.tiles
        if self.attention_head is None or spec is None or spec.aggregation != "attention":
            return None
        from breast_cancer_pipeline.training.attention import aggregate_tile_features  # noqa: PLC0415

        return aggregate_tile_features(self.attention_head, features, image_index, n_images)

    def with_forward(self, forward: Callable[[np.ndarray], tuple[Any, Any]]) -> ServingModel:
        """The same model whose forward pass is ``forward`` (another runtime's).

        Args:
            forward: From a ``uint8`` batch to ``(features, probabilities)`` of the whole
                model (an ensemble's mean included), as
                :func:`~breast_cancer_pipeline.serving.runtime.onnx_forward` gives. Grad-CAM
                still runs on :attr:`model`.
        """
        other = self.with_config()
        other._forwards = [forward]
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

    def predict_tiled(self, images: Sequence[TiledImage], batch_size: int) -> TiledAnswer:
        """Served answers of images cut into tiles, for a model with :attr:`tiles`.

        See :func:`~breast_cancer_pipeline.serving.tiling.score_tiles`.

        Args:
            images: The cut images
                (:func:`~breast_cancer_pipeline.serving.tiling.cut_image`).
            batch_size: Tiles per forward pass.
        """
        from breast_cancer_pipeline.serving.tiling import score_tiles  # noqa: PLC0415

        return score_tiles(self, images, batch_size)

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


def penultimate_features(forward: Any, images: np.ndarray, batch_size: int) -> np.ndarray:
    """The penultimate features of ``images``, ``batch_size`` at a time.

    Args:
        forward: A forward pass of :func:`compiled_forward` (or
            :meth:`ServingModel.forward`).
        images: ``uint8`` array ``(N, H, W, C)`` (a memory map is read batch by batch).
        batch_size: Images per pass.

    Returns:
        ``float32`` array ``(N, d)``; ``(0, 0)`` without images.
    """
    out = [
        np.asarray(forward(np.asarray(images[i : i + batch_size]))[0])
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)
