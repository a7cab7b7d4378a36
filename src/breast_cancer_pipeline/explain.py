"""Grad-CAM heat maps for the classifiers of :mod:`breast_cancer_pipeline.modeling`.

The backbone is a nested model named ``backbone`` (a Keras application or the small CNN). The
heat map is taken at the backbone's output (its last feature map) or, with ``layer``, at any
layer inside the backbone (finer, e.g. ``block3_relu`` of the small CNN). The classifier is
replayed layer by layer in inference mode (augmentation and dropout off) inside a gradient
tape, so no second model has to be saved or kept in sync.

:func:`overlay` colours a map (matplotlib's "jet" colours, computed here so that serving does
not need matplotlib) and blends it over its image; the report's Grad-CAM figure and the served
model's ``gradcam_png`` (:func:`gradcam_pngs`, a request row with ``explain`` true) both draw
with it.

A network trained on tiles is explained tile by tile: :func:`place_map` resizes a tile's map
onto the tile's box in the whole image (or in a thumbnail of it: the served top tile), and
:func:`stitch_maps` places several tiles' maps, each scaled by a weight, into one map of the
whole image, the maximum where tiles overlap (the explanation metrics).

Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
Localization", ICCV 2017.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

#: matplotlib's "jet" colour map as ``(position, value)`` knots per channel (its ``_jet_data``).
_JET = (
    ((0.0, 0.0), (0.35, 0.0), (0.66, 1.0), (0.89, 1.0), (1.0, 0.5)),
    ((0.0, 0.0), (0.125, 0.0), (0.375, 1.0), (0.64, 1.0), (0.91, 0.0), (1.0, 0.0)),
    ((0.0, 0.5), (0.11, 1.0), (0.34, 1.0), (0.65, 0.0), (1.0, 0.0)),
)


def grad_cam(
    model: Any,
    images: np.ndarray,
    class_indices: np.ndarray | list[int] | int,
    layer: str | None = None,
) -> np.ndarray:
    """Grad-CAM of ``class_indices`` for each image, upsampled to the input size.

    Args:
        model: A classifier whose backbone is a nested model named ``backbone`` and whose
            layers form a chain (as :func:`~breast_cancer_pipeline.modeling.build_classifier`
            builds them).
        images: ``uint8`` batch ``(N, H, W, C)`` as the model takes it.
        class_indices: The class explained for each image (one int for all).
        layer: Name of a layer inside the backbone; ``None`` for the backbone's output.

    Returns:
        ``float32`` array ``(N, H, W)`` in [0, 1] (each map divided by its maximum; all zero
        when no region raises the class score).

    Raises:
        ValueError: The model has no ``backbone`` layer, its layers do not form a chain, or
            ``layer`` is not a layer of the backbone.
    """
    import tensorflow as tf

    backbone, inner = _feature_model(model, layer)
    chain = _layer_chain(model)
    n = len(images)
    indices = np.broadcast_to(np.asarray(class_indices, dtype=np.int32), (n,))
    x = tf.convert_to_tensor(np.asarray(images))
    with tf.GradientTape() as tape:
        h = x
        feature_map = None
        for lyr in chain:
            if lyr is backbone:
                feature_map, h = inner(h)
            else:
                h = lyr(h, training=False)
        scores = tf.gather(h, indices, axis=1, batch_dims=1)
    grads = tape.gradient(scores, feature_map)
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(weights * feature_map, axis=-1, keepdims=True))
    cam = tf.image.resize(cam, images.shape[1:3], method="bilinear")[..., 0].numpy()
    peak = cam.reshape(n, -1).max(axis=1).reshape(n, 1, 1)
    return np.where(peak > 0, cam / np.where(peak > 0, peak, 1.0), 0.0).astype(np.float32)


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float) -> np.ndarray:
    """A heat map in "jet" colours blended over its (grey or colour) image.

    Args:
        image: ``uint8`` ``(H, W, 1)`` or ``(H, W, 3)``, as the model takes it.
        cam: ``(H, W)`` map in [0, 1] (:func:`grad_cam`).
        alpha: Opacity of the heat map (``reporting.gradcam.alpha``).

    Returns:
        ``uint8`` RGB ``(H, W, 3)``: ``(1 - alpha) * image + alpha * colours``.

    Raises:
        ValueError: ``image`` and ``cam`` differ in size.
    """
    if image.shape[:2] != cam.shape:
        raise ValueError(f"a {cam.shape} map does not fit an image of {image.shape[:2]}")
    level = np.clip(np.nan_to_num(cam, nan=0.0), 0.0, 1.0)
    colours = np.stack(
        [np.interp(level, [k[0] for k in knots], [k[1] for k in knots]) for knots in _JET], axis=-1
    )
    base = np.broadcast_to(image, colours.shape)  # grey: one channel for all three
    blended = (1.0 - alpha) * base.astype(np.float64) + alpha * 255.0 * colours
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def overlay_png(image: np.ndarray, cam: np.ndarray, alpha: float) -> bytes:
    """:func:`overlay` as PNG file bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(overlay(image, cam, alpha), mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def gradcam_pngs(
    model: Any,
    images: np.ndarray,
    class_indices: np.ndarray | list[int],
    settings: dict[str, Any],
) -> list[bytes]:
    """The Grad-CAM overlay of each image, for its class, as PNG bytes (what serving returns).

    Args:
        model: The classifier (see :func:`grad_cam`).
        images: ``uint8`` batch ``(N, H, W, C)`` as the model takes it.
        class_indices: The class explained for each image.
        settings: ``reporting.gradcam`` (``layer``, ``alpha``), as the report uses them.

    Returns:
        One PNG per image, at the model's input size.
    """
    if len(images) == 0:
        return []
    heat = grad_cam(model, images, class_indices, layer=settings["layer"])
    return [overlay_png(im, h, settings["alpha"]) for im, h in zip(images, heat, strict=True)]


def resize_map(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A heat map resized to ``(height, width)`` by Pillow's bilinear filter, ``float32``."""
    from PIL import Image

    height, width = int(size[0]), int(size[1])
    level = np.asarray(cam, dtype=np.float32)
    if level.shape == (height, width):
        return level.copy()
    image = Image.fromarray(level, mode="F").resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.float32)


def place_map(
    cam: np.ndarray,
    box: tuple[int, int, int, int] | np.ndarray,
    original: tuple[int, int],
    shape: tuple[int, ...],
) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """A tile's map resized onto the tile's box in an image of ``shape``.

    Args:
        cam: ``(size, size)`` map of the tile (:func:`grad_cam`).
        box: The tile's ``(top, left, height, width)`` in the original image's pixels.
        original: The original image's ``(height, width)``.
        shape: The image the map is placed in: the original, or a thumbnail of it.

    Returns:
        The box in ``shape``'s pixels ``(top, bottom, left, right)``
        (:func:`~breast_cancer_pipeline.tiles.scaled_box`) and the map resized to it.
    """
    from breast_cancer_pipeline.tiles import scaled_box  # noqa: PLC0415

    top, bottom, left, right = scaled_box(box, original, shape)
    return (top, bottom, left, right), resize_map(cam, (bottom - top, right - left))


def stitch_maps(
    cams: np.ndarray,
    boxes: np.ndarray,
    original: tuple[int, int],
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """One map of the whole image from the maps of some of its tiles.

    Each tile's map, times its weight, is placed at its box (:func:`place_map`); where tiles
    overlap the larger value is kept; pixels of no tile are 0.

    Args:
        cams: ``(n, size, size)`` maps of the tiles, in [0, 1].
        boxes: ``(n, 4)`` their ``(top, left, height, width)`` in the original image's pixels.
        original: The original image's ``(height, width)``: the stitched map's size.
        weights: ``(n,)`` factors of the tiles' maps (e.g. their scores); None: 1 each.

    Returns:
        ``float32`` array ``original``.
    """
    out = np.zeros(tuple(int(v) for v in original), dtype=np.float32)
    scale = np.ones(len(cams)) if weights is None else np.asarray(weights, dtype=np.float64)
    for cam, box, weight in zip(cams, boxes, scale, strict=True):
        (top, bottom, left, right), region = place_map(cam, box, original, out.shape)
        np.maximum(out[top:bottom, left:right], weight * region, out=out[top:bottom, left:right])
    return out


def _feature_model(model: Any, layer: str | None) -> tuple[Any, Any]:
    """The backbone and ``inner(x)``: its (feature map explained, output) in inference mode.

    Raises:
        ValueError: The model has no ``backbone`` layer, or ``layer`` is not one of its layers.
    """
    import keras

    try:
        backbone = model.get_layer("backbone")
    except ValueError:
        raise ValueError(
            f"Grad-CAM needs a nested model named 'backbone' (modeling.build_classifier); "
            f"{model.name!r} has layers {[lyr.name for lyr in model.layers]}"
        ) from None
    if layer is None:

        def inner(x: Any) -> tuple[Any, Any]:
            output = backbone(x, training=False)
            return output, output

        return backbone, inner
    try:
        target = backbone.get_layer(layer)
    except ValueError:
        raise ValueError(
            f"reporting.gradcam.layer={layer!r} is not a layer of the backbone "
            f"{backbone.name!r}; choose one of {[lyr.name for lyr in backbone.layers][-8:]} "
            "(the last ones) or null"
        ) from None
    both = keras.Model(backbone.inputs, [target.output, backbone.output])
    return backbone, lambda x: both(x, training=False)


def _layer_chain(model: Any) -> list[Any]:
    """The model's layers after its input, checked to form a chain (each feeds the next).

    Raises:
        ValueError: A layer does not take the previous layer's output.
    """
    import keras

    chain = [lyr for lyr in model.layers if not isinstance(lyr, keras.layers.InputLayer)]
    for previous, current in zip(chain, chain[1:], strict=False):
        parents = {
            t._keras_history.operation.name
            for node in current._inbound_nodes
            for t in node.input_tensors
        }
        if previous.name not in parents:
            raise ValueError(f"Grad-CAM expects a chain of layers; {current.name!r} breaks it")
    return chain
