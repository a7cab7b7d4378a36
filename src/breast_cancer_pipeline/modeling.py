"""The model factory: one place that builds every network used in training and serving.

A classifier takes ``uint8`` images of shape ``(size, size, channels)`` and does everything
else inside the model: stain normalisation of RGB histopathology (:mod:`.stain`, when the
augmentation spec has a fitted reference), augmentation (active only in training), the
backbone's own input scaling, grey-to-RGB expansion for ImageNet backbones, the backbone,
pooling and the head.
Serving therefore cannot drift from training: it feeds the same decoded pixels.

Importing this module imports Keras (and TensorFlow); pipelines import it inside their
training nodes so that the data stages start fast.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import layers, ops

from breast_cancer_pipeline.backbones import (
    BackboneSpec,
    check_input_size,
    check_weights,
    get_backbone,
)
from breast_cancer_pipeline.geometry import as_size
from breast_cancer_pipeline.stain import HEDJitter, StainNormalization

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


class WeightsUnavailableError(RuntimeError):
    """ImageNet weights were asked for but could not be downloaded."""


@keras.saving.register_keras_serializable(package="breast_cancer_pipeline")
class ImagePreprocessing(layers.Layer):
    """Scales 0..255 pixels the way a backbone expects (see ``backbones.PREPROCESSING_MODES``)."""

    def __init__(self, mode: str = "tf", **kwargs: Any) -> None:
        """Create the layer for one preprocessing ``mode``."""
        super().__init__(**kwargs)
        self.mode = mode

    def call(self, inputs: Any) -> Any:
        """Scale a float tensor of 0..255 pixels."""
        x = ops.cast(inputs, self.compute_dtype)
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "unit":
            return x / 255.0
        if self.mode == "torch":
            return (x / 255.0 - ops.array(_IMAGENET_MEAN)) / ops.array(_IMAGENET_STD)
        if self.mode == "caffe":
            return ops.flip(x, axis=-1) - ops.array(_CAFFE_MEAN_BGR)
        return x

    def get_config(self) -> dict[str, Any]:
        """Serialise the layer."""
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="breast_cancer_pipeline")
class GrayscaleToRGB(layers.Layer):
    """Repeats a single grey channel three times for backbones built for RGB."""

    def call(self, inputs: Any) -> Any:
        """Repeat the last axis to three channels."""
        return ops.repeat(inputs, 3, axis=-1)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        """Same shape with three channels."""
        return (*input_shape[:-1], 3)


@keras.saving.register_keras_serializable(package="breast_cancer_pipeline")
class RandomAffine(layers.Layer):
    """Random rotation, zoom and translation in one resampling, only when training.

    The ranges mean what they mean for Keras's ``RandomRotation`` (a fraction of a full turn),
    ``RandomZoom`` and ``RandomTranslation`` (fractions of the side), each drawn per image;
    the three are composed into one affine map about the image centre and applied with one
    bilinear interpolation (reflected borders) instead of three.
    """

    def __init__(
        self,
        rotation: float = 0.0,
        zoom: float = 0.0,
        translation: float = 0.0,
        fill_mode: str = "reflect",
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        """Create the layer with ``±`` ranges for each transform (0 leaves it out)."""
        super().__init__(**kwargs)
        self.rotation, self.zoom = float(rotation), float(zoom)
        self.translation, self.fill_mode, self.seed = float(translation), fill_mode, seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs: Any, training: bool = False) -> Any:
        """Transform a batch of images (identity unless ``training``)."""
        if not training:
            return inputs
        x = ops.cast(inputs, self.compute_dtype)
        shape = ops.shape(x)
        height, width = ops.cast(shape[1], "float32"), ops.cast(shape[2], "float32")

        def draw(limit: float) -> Any:
            return keras.random.uniform((shape[0],), -limit, limit, seed=self.seed_generator)

        angle = draw(self.rotation) * (2.0 * np.pi)
        scale = 1.0 + draw(self.zoom)
        shift_x, shift_y = draw(self.translation) * width, draw(self.translation) * height
        # The map from output to input pixel coordinates, about the centre.
        cos, sin = ops.cos(angle), ops.sin(angle)
        cx, cy = (width - 1.0) / 2.0, (height - 1.0) / 2.0
        a0, a1, b0, b1 = scale * cos, -scale * sin, scale * sin, scale * cos
        a2 = cx - a0 * cx - a1 * cy - shift_x
        b2 = cy - b0 * cx - b1 * cy - shift_y
        zero = ops.zeros_like(a0)
        transform = ops.stack([a0, a1, a2, b0, b1, b2, zero, zero], axis=1)
        return ops.image.affine_transform(
            x, transform, interpolation="bilinear", fill_mode=self.fill_mode
        )

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        """The input's shape."""
        return input_shape

    def get_config(self) -> dict[str, Any]:
        """Serialise the layer."""
        return {
            **super().get_config(),
            "rotation": self.rotation,
            "zoom": self.zoom,
            "translation": self.translation,
            "fill_mode": self.fill_mode,
            "seed": self.seed,
        }


def set_seed(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and TensorFlow; optionally make TensorFlow ops deterministic."""
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)
    if deterministic:
        import tensorflow as tf  # noqa: PLC0415

        tf.config.experimental.enable_op_determinism()


def build_augmenter(spec: Mapping[str, Any], seed: int | None = None) -> keras.Sequential:
    """Build the augmentation block from an augmentation spec.

    Args:
        spec: ``{"flip": "horizontal"|"vertical"|"horizontal_and_vertical"|None,
            "rotation": float (fraction of a full turn), "zoom": float, "contrast": float,
            "translation": float, "hed_jitter": float (RGB only)}``; zero or ``None`` leaves a
            transform out.
        seed: Seed for the random layers.

    Returns:
        A ``Sequential`` of Keras preprocessing layers, active only when ``training=True``.
    """
    blocks: list[layers.Layer] = []
    if spec.get("hed_jitter"):
        blocks.append(HEDJitter(spec["hed_jitter"], seed=seed, name="hed_jitter"))
    if spec.get("flip"):
        blocks.append(layers.RandomFlip(spec["flip"], seed=seed))
    geometry = {key: float(spec.get(key) or 0.0) for key in ("rotation", "zoom", "translation")}
    if any(geometry.values()):
        # One resampling for all three: three times faster than Keras's separate layers.
        blocks.append(RandomAffine(**geometry, seed=seed, name="random_affine"))
    if spec.get("contrast"):
        blocks.append(layers.RandomContrast(spec["contrast"], value_range=(0, 255), seed=seed))
    # An empty Sequential cannot be called: with every transform off, an identity.
    return keras.Sequential(blocks or [layers.Identity()], name="augmentation")


def build_small_cnn(
    image_size: int | tuple[int, int],
    channels: int,
    filters: tuple[int, ...] = (16, 32, 64, 128),
) -> keras.Model:
    """A plain CNN baseline: blocks of 3x3 conv, batch norm, ReLU and 2x2 max pooling."""
    inputs = keras.Input((*as_size(image_size), channels))
    x = inputs
    for i, n in enumerate(filters):
        x = _conv_bn_relu(x, n, 1, f"block{i + 1}")
        x = layers.MaxPooling2D(name=f"block{i + 1}_pool")(x)
    return keras.Model(inputs, x, name="backbone")


def build_small_resnet(
    image_size: int | tuple[int, int],
    channels: int,
    filters: tuple[int, ...] = (16, 32, 64, 128),
) -> keras.Model:
    """A small residual network: a stem, then one residual block per further width.

    The stem (3x3 conv, batch norm, ReLU, 2x2 max pooling) has ``filters[0]``; each block
    halves the side with a strided 3x3 conv, adds a second 3x3 conv and a strided 1x1
    projection shortcut (as ResNet's basic block), then ReLU.
    """
    inputs = keras.Input((*as_size(image_size), channels))
    x = _conv_bn_relu(inputs, filters[0], 1, "stem")
    x = layers.MaxPooling2D(name="stem_pool")(x)
    for i, n in enumerate(filters[1:]):
        name = f"block{i + 1}"
        residual = _conv_bn_relu(x, n, 2, f"{name}_a")
        residual = layers.Conv2D(n, 3, padding="same", use_bias=False, name=f"{name}_b_conv")(
            residual
        )
        residual = layers.BatchNormalization(momentum=0.9, name=f"{name}_b_bn")(residual)
        shortcut = layers.Conv2D(n, 1, strides=2, use_bias=False, name=f"{name}_skip_conv")(x)
        shortcut = layers.BatchNormalization(momentum=0.9, name=f"{name}_skip_bn")(shortcut)
        x = layers.Add(name=f"{name}_add")([shortcut, residual])
        x = layers.Activation("relu", name=f"{name}_relu")(x)
    return keras.Model(inputs, x, name="backbone")


def _conv_bn_relu(x: Any, filters: int, strides: int, name: str) -> Any:
    """3x3 conv (no bias), batch norm, ReLU."""
    x = layers.Conv2D(
        filters, 3, strides=strides, padding="same", use_bias=False, name=f"{name}_conv"
    )(x)
    # A short memory (momentum 0.9) lets the moving statistics settle within the few
    # hundred steps of a small dataset; Keras's 0.99 leaves them off for ~500 steps.
    x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


#: The builders of the project's own networks, by ``BackboneSpec.architecture``.
OWN_BUILDERS = {"plain": build_small_cnn, "residual": build_small_resnet}


def build_backbone(
    spec: BackboneSpec, image_size: int | tuple[int, int], channels: int, weights: str | None
) -> keras.Model:
    """Build a backbone without its top, as a nested model named ``backbone``.

    Raises:
        WeightsUnavailableError: ``weights="imagenet"`` and the download failed.
    """
    if spec.constructor is None:
        base = OWN_BUILDERS[spec.architecture](image_size, channels, spec.filters)
        if weights is not None:  # a local weights file (check_weights refuses "imagenet")
            base.load_weights(weights)
        return base
    constructor = getattr(keras.applications, spec.constructor)
    kwargs = dict(spec.constructor_kwargs)
    try:
        base = constructor(
            include_top=False,
            weights=weights,
            input_shape=(*as_size(image_size), 3),
            **kwargs,
        )
    except Exception as exc:
        if weights != "imagenet":
            raise
        raise WeightsUnavailableError(
            f"ImageNet weights for backbone {spec.name!r} could not be downloaded ({exc}). "
            "This machine may have no internet access. Either set the backbone's weights to "
            "the path of a local weights file (download keras.applications' '*_notop.h5' "
            "file on a connected machine and copy it here), or set weights: null to train "
            "from random initialisation."
        ) from exc
    # Renamed in place (re-wrapping a functional model duplicates some of its nodes).
    base.name = "backbone"
    return base


def _backbone_features(
    x: Any,
    backbone: str,
    image_size: int | tuple[int, int],
    channels: int,
    weights: str | None,
) -> tuple[Any, keras.Model]:
    spec = get_backbone(backbone)
    check_weights(weights, spec)
    check_input_size(image_size, spec, weights)
    if spec.constructor is not None and channels == 1:
        x = GrayscaleToRGB(name="grey_to_rgb")(x)
    x = ImagePreprocessing(spec.preprocessing, name="preprocessing")(x)
    base = build_backbone(spec, image_size, 3 if spec.constructor else channels, weights)
    # Pretrained BatchNorm statistics must survive fine-tuning: run the base in inference mode.
    # A randomly initialised base has no statistics to protect and trains BatchNorm normally.
    x = base(x, training=False) if weights is not None else base(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return x, base


def stain_preprocessing(x: Any, augmentation: Mapping[str, Any] | None, channels: int) -> Any:
    """``x`` through stain normalisation when the spec has a fitted ``stain_reference``.

    Raises:
        ValueError: A stain setting (normalisation or ``hed_jitter``) on images that are not
            RGB.
    """
    spec = augmentation or {}
    reference = spec.get("stain_reference") or {}
    if (reference.get("normalize") or spec.get("hed_jitter")) and channels != 3:
        raise ValueError(
            f"augmentation.stain needs RGB images, the model has {channels} channel(s): set "
            "ingestion.color_mode: rgb, or augmentation.stain.normalize and jitter to null"
        )
    if not reference.get("normalize"):
        return x
    # Computed in float32 under any dtype policy (optical densities, percentiles).
    return StainNormalization(reference, name="stain_normalization", dtype="float32")(x)


def build_feature_extractor(
    backbone: str,
    image_size: int | tuple[int, int],
    channels: int,
    weights: str | None,
    augmentation: Mapping[str, Any] | None = None,
) -> keras.Model:
    """Frozen backbone + global average pooling: ``uint8`` images to feature vectors.

    ``image_size`` is one side (a square) or ``(height, width)``; an ``augmentation`` spec
    with a ``stain_reference`` normalises the stains first, as the classifier does.
    """
    inputs = keras.Input((*as_size(image_size), channels), dtype="uint8", name="image")
    x = stain_preprocessing(layers.Rescaling(1.0, name="to_float")(inputs), augmentation, channels)
    features, base = _backbone_features(x, backbone, image_size, channels, weights)
    base.trainable = False
    return keras.Model(inputs, features, name=f"{backbone}_features")


def build_head(inputs: Any, num_classes: int, head: Mapping[str, Any]) -> Any:
    """The classification head: dropout, optional dense layer, softmax."""
    x = inputs
    if head.get("dropout"):
        x = layers.Dropout(head["dropout"], name="head_dropout")(x)
    if head.get("dense_units"):
        x = layers.Dense(head["dense_units"], activation="relu", name="head_dense")(x)
    return layers.Dense(num_classes, activation="softmax", name="probabilities", dtype="float32")(x)


def build_head_model(feature_dim: int, num_classes: int, head: Mapping[str, Any]) -> keras.Model:
    """A head alone, trained on cached backbone features."""
    inputs = keras.Input((feature_dim,), name="features")
    return keras.Model(inputs, build_head(inputs, num_classes, head), name="head")


@keras.saving.register_keras_serializable(package="breast_cancer_pipeline")
class MaskedAttentionPooling(layers.Layer):
    """Attention weights over a bag's real tiles, and the bag's attention-weighted embedding.

    Called on ``[embeddings (B, N, D), scores (B, N, 1), mask (B, N)]``: the weights are the
    softmax of the scores over the tiles whose mask is 1 (exactly 0 on padding), the pooled
    embedding their weighted sum. A bag without any real tile gets zero weights.
    """

    def call(self, inputs: list[Any]) -> tuple[Any, Any]:
        """Return ``(pooled (B, D), weights (B, N))``."""
        embeddings, scores, mask = inputs
        scores = ops.squeeze(ops.cast(scores, "float32"), axis=-1)
        mask = ops.cast(mask, "float32")
        scores = ops.where(mask > 0, scores, ops.full_like(scores, -1e9))
        scores = scores - ops.max(scores, axis=1, keepdims=True)
        weights = ops.exp(scores) * mask
        weights = weights / ops.maximum(ops.sum(weights, axis=1, keepdims=True), 1e-12)
        pooled = ops.sum(ops.cast(embeddings, "float32") * weights[..., None], axis=1)
        return pooled, weights

    def compute_output_shape(self, input_shape: list[tuple]) -> tuple[tuple, tuple]:
        """``(batch, D)`` and ``(batch, N)``."""
        embeddings = input_shape[0]
        return (embeddings[0], embeddings[2]), (embeddings[0], embeddings[1])


def build_attention_mil_head(
    feature_dim: int,
    num_classes: int,
    params: Mapping[str, Any],
    feature_mean: np.ndarray | None = None,
    feature_variance: np.ndarray | None = None,
) -> keras.Model:
    """The gated attention-MIL head (Ilse et al. 2018) over the features of an image's tiles.

    Each tile's feature vector is standardised, embedded (``h = ReLU(W h_0)``), scored by
    gated attention ``w^T (tanh(V h) * sigmoid(U h))``; the scores' softmax over the bag's
    real tiles weighs the embeddings, and a softmax layer classifies their weighted sum.

    Args:
        feature_dim: Width of a tile's features (the tile classifier's penultimate layer).
        num_classes: Number of output classes.
        params: ``augmentation.tiles.attention``; ``hidden`` is the width of the embedding
            and of the attention's ``V`` and ``U``.
        feature_mean: Per-feature mean the features are standardised with (None: 0).
        feature_variance: Per-feature variance (None: 1).

    Returns:
        An uncompiled ``keras.Model`` from ``[bag (B, N, feature_dim), mask (B, N)]`` (mask 1
        on real tiles, 0 on padding; any ``N``) to ``[probabilities (B, num_classes),
        attention (B, N)]``, the attention summing to 1 over each bag's real tiles.
    """
    hidden = int(params["hidden"])
    bag = keras.Input((None, feature_dim), name="bag")
    mask = keras.Input((None,), name="mask")
    scaling = layers.Normalization(
        axis=-1,
        mean=np.zeros(feature_dim) if feature_mean is None else np.asarray(feature_mean),
        variance=np.ones(feature_dim) if feature_variance is None else np.asarray(feature_variance),
        name="feature_scaling",
    )
    h = layers.Dense(hidden, activation="relu", name="embedding")(scaling(bag))
    gate_v = layers.Dense(hidden, activation="tanh", name="attention_v")(h)
    gate_u = layers.Dense(hidden, activation="sigmoid", name="attention_u")(h)
    gated = layers.Multiply(name="attention_gate")([gate_v, gate_u])
    scores = layers.Dense(1, name="attention_w")(gated)
    pooled, weights = MaskedAttentionPooling(name="attention")([h, scores, mask])
    proba = layers.Dense(num_classes, activation="softmax", name="probabilities", dtype="float32")
    return keras.Model([bag, mask], [proba(pooled), weights], name="attention_mil_head")


def build_classifier(
    backbone: str,
    num_classes: int,
    image_size: int | tuple[int, int],
    channels: int,
    weights: str | None,
    head: Mapping[str, Any],
    augmentation: Mapping[str, Any] | None = None,
    seed: int | None = None,
) -> keras.Model:
    """Build the end-to-end classifier (base frozen).

    Fine-tuning makes the top of the base trainable afterwards
    (:func:`breast_cancer_pipeline.training.phases.unfreeze`).

    Args:
        backbone: Registry name (see :mod:`breast_cancer_pipeline.backbones`).
        num_classes: Number of output classes.
        image_size: Input side in pixels (a square), or ``(height, width)``.
        channels: 1 (grayscale) or 3 (RGB) input channels.
        weights: ``"imagenet"``, a local weights file path, or ``None``.
        head: ``{"dropout": float, "dense_units": int | None}``.
        augmentation: Augmentation spec for :func:`build_augmenter`, or ``None``; its
            ``stain_reference`` (:func:`breast_cancer_pipeline.stain.fit_reference`) adds
            stain normalisation before the augmentation, active at inference too.
        seed: Seed for the augmentation layers.

    Returns:
        An uncompiled ``keras.Model`` from ``uint8`` images to class probabilities.

    Raises:
        ValueError: A stain setting on images that are not RGB.
    """
    inputs = keras.Input((*as_size(image_size), channels), dtype="uint8", name="image")
    x = stain_preprocessing(layers.Rescaling(1.0, name="to_float")(inputs), augmentation, channels)
    if augmentation:
        x = build_augmenter(augmentation, seed=seed)(x)
    features, base = _backbone_features(x, backbone, image_size, channels, weights)
    base.trainable = False
    outputs = build_head(features, num_classes, head)
    return keras.Model(inputs, outputs, name=f"{backbone}_classifier")


def load_model(path: str | Path, **kwargs: Any) -> keras.Model:
    """Load a saved classifier with the project's custom layers registered.

    Always in Keras's safe mode: a file holding arbitrary code (a ``Lambda`` layer's
    bytecode) is refused, whatever ``kwargs`` say, so a model file from elsewhere cannot run
    code when training, reporting or the server loads it.

    Raises:
        ValueError: The file needs unsafe deserialisation (Keras's message says why).
    """
    kwargs.pop("safe_mode", None)
    return keras.saving.load_model(Path(path), safe_mode=True, **kwargs)
