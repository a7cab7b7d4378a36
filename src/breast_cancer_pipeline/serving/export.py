"""The served network exported to ONNX and LiteRT, and its parity with Keras.

The served network is what :class:`~breast_cancer_pipeline.serving.ServingModel` runs for one
view of a batch: ``uint8`` images ``(N, size, size, channels)`` in (``image``; any ``N``),
the preprocessing inside, two ``float32`` outputs: ``features`` (the penultimate features the
out-of-distribution score reads) and ``probabilities`` (softmax). The test-time views, the
temperature and floor, the threshold and the conformal sets stay in Python, the same for
every runtime (:meth:`ServingModel.predict_with_ood`).

* An ensemble (``evaluation.ensemble``) is exported as **one merged graph**: every member runs
  on the same input and their probabilities are averaged inside (a Keras ``Average`` layer),
  the features are the first member's, as served. One file, one session per request, and a
  user elsewhere gets the served probabilities without re-implementing the average.
* The augmentation block is left out (:func:`served_network`): it does nothing at inference,
  but Keras's random layers still draw random numbers in the traced graph, and ONNX has no
  operator for TensorFlow's stateless random ops.
* Both formats are converted from one SavedModel of the network (:func:`saved_model`, Keras's
  ``model.export(format="tf_saved_model")``).
* ONNX: tf2onnx, as its ``--saved-model`` command does, at ``inference.export.opset``
  (:func:`to_onnx` says why not Keras's ``format="onnx"``).
* LiteRT: TensorFlow's converter, as Keras's ``format="litert"`` runs it, restricted to
  LiteRT's builtin operators: the file runs on ai-edge-litert's interpreter alone, without
  TensorFlow's select ops (Flex), which that interpreter does not carry. A network that needs
  one fails to convert and its message names the operators.

Each file is checked against Keras on images (the test split, by the reporting pipeline):
:func:`parity` gives the largest absolute difference of the probabilities at batch size 1 and
at an odd batch size, and a file over the tolerance is not shipped.

Importing this module is cheap: TensorFlow, Keras and the converters are imported on use.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

#: The exported formats and the file each is saved as, beside ``model.keras``.
EXPORT_FILES = {"onnx": "model.onnx", "litert": "model.tflite"}
#: The input and the outputs of every exported graph.
INPUT_NAME = "image"
OUTPUT_NAMES = ("features", "probabilities")
#: The name of the augmentation block inside a classifier (``modeling.build_augmenter``).
AUGMENTATION_LAYER = "augmentation"

#: A forward pass: a ``uint8`` batch to ``(features, probabilities)``.
Forward = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


class ExportError(RuntimeError):
    """The served network could not be converted to a format."""


def _inference_copy(model: Any, name: str) -> Any:
    """``model`` without its augmentation block, with its penultimate features as an output.

    The layers (and their weights) are shared with ``model``, not copied.
    """
    import keras

    from breast_cancer_pipeline.serving.model import penultimate_layer

    last = penultimate_layer(model)
    seen: dict[str, Any] = {}

    def call(layer: Any, *args: Any, **kwargs: Any) -> Any:
        if layer.name == AUGMENTATION_LAYER:
            return args[0]
        if layer is last:
            seen["features"] = args[0]
        return layer(*args, **kwargs)

    clone = keras.models.clone_model(model, clone_function=lambda layer: layer, call_function=call)
    return keras.Model(clone.input, [seen["features"], clone.output], name=name)


def served_network(serving_model: Any) -> Any:
    """The network :class:`ServingModel` runs, as one Keras model with named outputs.

    Args:
        serving_model: A :class:`~breast_cancer_pipeline.serving.ServingModel` (one
            classifier or an ensemble) whose classifiers end with a ``Dense`` layer.

    Returns:
        A ``keras.Model`` from ``uint8`` images (``image``) to ``{"features": ...,
        "probabilities": ...}``, both ``float32``; an ensemble's probabilities are the mean
        of its members'.

    Raises:
        ValueError: A classifier does not end with a ``Dense`` layer.
    """
    import keras
    from keras import layers

    shape = tuple(serving_model.model.input_shape[1:])
    image = keras.Input(shape, dtype="uint8", name=INPUT_NAME)
    features, first = _inference_copy(serving_model.model, "member_0")(image)
    others = [
        _inference_copy(member, f"member_{i}")(image)[1]
        for i, member in enumerate(serving_model.members[1:], start=1)
    ]
    probabilities = layers.Average(name="mean")([first, *others]) if others else first
    outputs = {
        "features": layers.Activation("linear", dtype="float32", name="features")(features),
        "probabilities": layers.Activation("linear", dtype="float32", name="probabilities")(
            probabilities
        ),
    }
    return keras.Model(image, outputs, name="served_network")


@contextmanager
def saved_model(network: Any) -> Iterator[Path]:
    """The network as a TensorFlow SavedModel in a temporary folder, both formats' source.

    Keras's ``model.export(format="tf_saved_model")`` (inference mode, dynamic batch); the
    folder is removed when the ``with`` block ends.
    """
    import tensorflow as tf

    signature = [tf.TensorSpec((None, *network.input_shape[1:]), tf.uint8, name=INPUT_NAME)]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "saved_model"
        network.export(str(path), format="tf_saved_model", verbose=False, input_signature=signature)
        yield path


def to_onnx(saved: Path, opset: int) -> bytes:
    """The SavedModel as an ONNX graph, converted by tf2onnx as its ``--saved-model`` does.

    Not Keras's ``model.export(format="onnx")``: that converts a traced function whose captured
    constants (a ``Normalization`` layer's mean and variance, in EfficientNet) become inputs
    of the graph instead of constants, so the file cannot run; the SavedModel has them frozen.

    Args:
        saved: A folder of :func:`saved_model`.
        opset: The ONNX opset to write.

    Raises:
        ExportError: The conversion failed (the message says why).
    """
    from tf2onnx import convert, tf_loader

    try:
        with _quiet():
            graph, inputs, outputs, renames = tf_loader.from_saved_model(
                str(saved),
                None,
                None,
                tag=["serve"],
                signatures=["serving_default"],
                return_tensors_to_rename=True,
            )
            proto, _ = convert.from_graph_def(
                graph,
                name="served_network",
                input_names=inputs,
                output_names=outputs,
                opset=opset,
                tensors_to_rename=renames,
            )
    except Exception as exc:
        raise ExportError(f"ONNX conversion failed: {exc}") from exc
    for value in [*proto.graph.input, *proto.graph.output]:  # tf2onnx names it unk__<n>
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    return proto.SerializeToString()


def to_litert(saved: Path) -> bytes:
    """The SavedModel as a LiteRT flatbuffer (dynamic batch), with builtin operators only.

    The converter Keras's ``model.export(format="litert")`` runs, without the TensorFlow
    select ops it allows: the file runs on ai-edge-litert's interpreter alone.

    Args:
        saved: A folder of :func:`saved_model`.

    Raises:
        ExportError: The conversion failed, e.g. an operator would need TensorFlow's select
            ops (the converter's message names it).
    """
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    try:
        with _quiet():
            return converter.convert()
    except Exception as exc:
        raise ExportError(f"LiteRT conversion (builtin operators only) failed: {exc}") from exc


@contextmanager
def _quiet() -> Iterator[None]:
    """TensorFlow's deprecation notices and tf2onnx's progress lines kept out of the run's log."""
    loggers = [logging.getLogger(name) for name in ("tensorflow", "tf2onnx")]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for log, level in zip(loggers, levels, strict=True):
            log.setLevel(level)


def batches(images: np.ndarray, size: int) -> list[np.ndarray]:
    """``images`` cut into consecutive batches of ``size`` (the last may be smaller)."""
    return [images[start : start + size] for start in range(0, len(images), size)]


def parity(
    reference: np.ndarray, forward: Forward, images: np.ndarray, batch_sizes: Sequence[int]
) -> dict[str, float]:
    """The largest absolute differences of an exported graph's outputs from Keras's.

    Args:
        reference: Keras's probabilities of ``images`` (``(N, n_classes)``).
        forward: The exported graph's forward pass (:mod:`.runtime`).
        images: ``uint8`` images ``(N, size, size, channels)``.
        batch_sizes: The batch sizes to run ``forward`` at (e.g. 1 and an odd size).

    Returns:
        ``max_abs_diff_batch_<b>`` for each batch size ``b`` and ``max_abs_diff``, the
        largest of them.
    """
    found = {}
    for size in batch_sizes:
        proba = np.concatenate([forward(batch)[1] for batch in batches(images, size)])
        found[f"max_abs_diff_batch_{size}"] = float(np.max(np.abs(proba - reference)))
    found["max_abs_diff"] = max(found.values())
    return found


def package_versions(*names: str) -> str:
    """``"name version"`` of each installed distribution, ``", "``-joined."""
    found = []
    for name in names:
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return ", ".join(found)
