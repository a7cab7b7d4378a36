"""The packaged model's network exported to ONNX and LiteRT, each checked on the test split.

:func:`export_served_model` converts the served network
(:func:`~breast_cancer_pipeline.serving.export.served_network`), runs each file on its own
runtime over the test split at batch size 1 and at ``inference.export.parity_batch_size``,
and compares the probabilities with Keras's. A file within ``inference.export.tolerance``
is carried by the packaged model (written beside ``model.keras``, logged with the model
version); one that fails to convert or to match is not, and ``metrics.json``'s ``export``
block and the model card say why.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from breast_cancer_pipeline.serving.export import (
    EXPORT_FILES,
    ExportError,
    batches,
    package_versions,
    parity,
    saved_model,
    served_network,
    to_litert,
    to_onnx,
)
from breast_cancer_pipeline.serving.runtime import litert_forward, onnx_forward

logger = logging.getLogger(__name__)

#: What each format records besides its parity: the tools that made and ran the file.
_TOOLS = {
    "onnx": {"converter": ("tf2onnx", "onnx"), "runtime": ("onnxruntime",)},
    "litert": {"converter": ("tensorflow",), "runtime": ("ai-edge-litert",)},
}


def export_served_model(
    packaged_model: Any, model_input: dict[str, np.ndarray], params: dict
) -> tuple[Any, dict[str, Any]]:
    """Export the packaged model's network and check each file against Keras.

    Args:
        packaged_model: The :class:`~breast_cancer_pipeline.serving.ServingModel` of
            ``package_model`` (one classifier or the ensemble).
        model_input: The arrays of the splits (``x_test``: the images of the check).
        params: ``inference.export`` (``onnx``, ``litert``, ``opset``, ``tolerance``,
            ``parity_batch_size``).

    Returns:
        ``(serving_model, report)``: the packaged model carrying the files that passed, and
        ``metrics.json``'s ``export`` block: per format the file, its tools, the largest
        probability difference at each batch size, the tolerance and whether it is shipped
        (or the conversion error).
    """
    kinds = [kind for kind in EXPORT_FILES if params[kind]]
    if not kinds:
        return packaged_model, {}
    images = np.asarray(model_input["x_test"])
    size = int(params["parity_batch_size"])
    reference = _keras_probabilities(packaged_model, images, size)
    exports, report = {}, {}
    with saved_model(served_network(packaged_model)) as saved:
        for kind in kinds:
            graph, report[kind] = _export_one(kind, saved, reference, images, params)
            report[kind]["graph"] = _graph_text(len(packaged_model.members))
            if graph is not None:
                exports[kind] = graph
    return packaged_model.with_exports(exports), report


def _keras_probabilities(served: Any, images: np.ndarray, size: int) -> np.ndarray:
    """Keras's probabilities of ``images`` (the TensorFlow runtime), ``size`` at a time."""
    n_classes = len(served.class_names)
    parts = [served.forward(batch)[1] for batch in batches(images, size)]
    return np.concatenate(parts) if parts else np.empty((0, n_classes), dtype=np.float32)


def _export_one(
    kind: str, saved: Path, reference: np.ndarray, images: np.ndarray, params: dict
) -> tuple[bytes | None, dict[str, Any]]:
    """One format's file (``None`` when not shipped) and its block of the report."""
    block: dict[str, Any] = {"file": EXPORT_FILES[kind]}
    if kind == "onnx":
        block["opset"] = int(params["opset"])
    else:
        block["operators"] = "LiteRT builtins only (no TensorFlow select ops)"
        block["quantization"] = "none (float32)"
    block |= {role: package_versions(*names) for role, names in _TOOLS[kind].items()}
    try:
        graph = to_onnx(saved, params["opset"]) if kind == "onnx" else to_litert(saved)
        if len(images) == 0:
            raise ExportError("no test images to check it on")
        forward = onnx_forward(graph) if kind == "onnx" else litert_forward(graph)
        sizes = (1, int(params["parity_batch_size"]))
        found = parity(reference, forward, images, sizes)
    except Exception as exc:  # noqa: BLE001 - a file that fails is not shipped; the run goes on
        logger.warning("%s is not shipped: %s", EXPORT_FILES[kind], exc)
        return None, {**block, "shipped": False, "error": str(exc)[:2000]}
    tolerance = float(params["tolerance"])
    block |= {"bytes": len(graph), "images": len(images), "tolerance": tolerance, **found}
    block["shipped"] = block["max_abs_diff"] <= tolerance
    if not block["shipped"]:
        logger.warning(
            "%s is not shipped: its probabilities differ from Keras's by up to %.3g on the "
            "test split, more than inference.export.tolerance = %g",
            EXPORT_FILES[kind],
            block["max_abs_diff"],
            tolerance,
        )
        return None, block
    logger.info(
        "%s: probabilities within %.3g of Keras's on %d test images",
        EXPORT_FILES[kind],
        block["max_abs_diff"],
        len(images),
    )
    return graph, block


def _graph_text(members: int) -> str:
    if members == 1:
        return "one graph: the classifier"
    return f"one merged graph: the mean of {members} fold models' probabilities"
