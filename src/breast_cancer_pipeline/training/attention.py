"""The attention-MIL head of ``augmentation.tiles.aggregation: attention``, fitted and applied.

An image is a bag of tiles. The tile classifier is trained first; its penultimate features
of each image's tiles are then frozen, and the gated attention head
(:func:`~breast_cancer_pipeline.modeling.build_attention_mil_head`, Ilse et al. 2018) learns
from the bags which tiles decide the image's label, and how.

- :func:`bags_from_tiles`: the tile feature rows of each image, from the tile arrays'
  ``tile_image_<split>`` index.
- :func:`pad_bags`: bags padded to one array with a mask of the real tiles.
- :func:`fit_attention_head`: the head trained on the training bags with balanced class
  weights, stopped early on the validation bags' loss.
- :func:`attention_aggregate`: image probabilities and each tile's attention weight.
- :func:`aggregate_tile_features`: the same from tile rows (the shape of
  :func:`~breast_cancer_pipeline.tiles.aggregate_tiles`' arguments).

The ``augmentation.tiles.attention`` parameters: ``hidden`` (width of the embedding and of
the attention), ``epochs``, ``learning_rate``, ``patience`` (epochs without a better
validation loss before stopping), ``batch_size`` (bags per step) and ``max_tiles`` (null: a
training bag keeps all its tiles; an int: a bag with more keeps that many, drawn once with
the seed). Applying the head always uses every tile.

Imports Keras (and TensorFlow): import it inside the nodes that fit or apply the head.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np

from breast_cancer_pipeline.metrics import class_weights
from breast_cancer_pipeline.modeling import build_attention_mil_head, set_seed

logger = logging.getLogger(__name__)

#: Bags per forward pass when the head is applied (memory only: the answers do not depend on it).
PREDICT_BAGS = 64


def bags_from_tiles(
    tile_features: np.ndarray, tile_image: np.ndarray, n_images: int
) -> list[np.ndarray]:
    """The feature rows of each image's tiles, in the tiles' order.

    Args:
        tile_features: ``(n_tiles, d)`` features of a split's tiles.
        tile_image: ``(n_tiles,)`` the row (``0 .. n_images - 1``) of each tile's image.
        n_images: Images in the split.

    Returns:
        ``n_images`` arrays ``(n_i, d)``.

    Raises:
        ValueError: The lengths differ, an index is out of range, or an image has no tile.
    """
    tile_features = np.asarray(tile_features)
    tile_image = np.asarray(tile_image, dtype=np.int64)
    if len(tile_features) != len(tile_image):
        raise ValueError(
            f"{len(tile_features)} tile feature rows but {len(tile_image)} tile image indices"
        )
    if tile_image.size and (tile_image.min() < 0 or tile_image.max() >= n_images):
        raise ValueError(
            f"tile image indices must be within [0, {n_images}), got "
            f"{tile_image.min()}..{tile_image.max()}"
        )
    order = np.argsort(tile_image, kind="stable")
    bounds = np.searchsorted(tile_image[order], np.arange(n_images + 1))
    empty = np.flatnonzero(np.diff(bounds) == 0)
    if empty.size:
        raise ValueError(f"images {empty[:5].tolist()} have no tile; every image needs one")
    return [tile_features[order[bounds[i] : bounds[i + 1]]] for i in range(n_images)]


def pad_bags(
    bags: Sequence[np.ndarray],
    max_tiles: int | None = None,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Bags as one zero-padded array and the mask of their real tiles.

    Args:
        bags: ``(n_i, d)`` arrays, each with at least one row.
        max_tiles: A bag with more rows keeps this many (drawn by ``rng``, kept in order);
            None keeps every row.
        rng: Draws the kept rows (required with ``max_tiles``).

    Returns:
        ``(padded (n_bags, L, d) float32, mask (n_bags, L) float32)``, ``L`` the longest
        bag kept.
    """
    kept = []
    for bag in bags:
        rows = np.arange(len(bag))
        if max_tiles is not None and len(bag) > max_tiles:
            rows = np.sort(rng.choice(len(bag), max_tiles, replace=False))
        kept.append(np.asarray(bag, dtype=np.float32)[rows])
    longest = max(len(bag) for bag in kept)
    padded = np.zeros((len(kept), longest, kept[0].shape[1]), dtype=np.float32)
    mask = np.zeros((len(kept), longest), dtype=np.float32)
    for i, bag in enumerate(kept):
        padded[i, : len(bag)], mask[i, : len(bag)] = bag, 1.0
    return padded, mask


def _feature_moments(bags: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of the training tiles' features (a constant feature: variance 1)."""
    rows = np.concatenate([np.asarray(bag, dtype=np.float64) for bag in bags])
    variance = rows.var(axis=0)
    return rows.mean(axis=0), np.where(variance > 0, variance, 1.0)


def fit_attention_head(
    features_per_image: Sequence[np.ndarray],
    labels: np.ndarray,
    params: Mapping[str, Any],
    seed: int,
    *,
    validation: tuple[Sequence[np.ndarray], np.ndarray] | None = None,
    num_classes: int | None = None,
) -> keras.Model:
    """Train the attention-MIL head on the frozen tile features of each training image.

    The features are standardised by the training tiles' mean and variance (inside the
    head, so applying it needs nothing else); the loss is class-weighted (balanced); with
    ``validation`` the run stops after ``patience`` epochs without a lower validation loss
    and ends on the weights of its best epoch, otherwise it runs ``epochs`` epochs.

    Args:
        features_per_image: One ``(n_i, d)`` array per training image (its tiles' features).
        labels: ``(n_images,)`` image class indices.
        params: ``augmentation.tiles.attention`` (see the module's docstring).
        seed: Seed of the initialisation, the shuffling and the ``max_tiles`` draw.
        validation: ``(features_per_image, labels)`` of the validation images, or None.
        num_classes: Classes of the head (None: ``labels.max() + 1``).

    Returns:
        The trained head (:func:`~breast_cancer_pipeline.modeling.build_attention_mil_head`).

    Raises:
        ValueError: No bag, bags and labels differ in length, or a bag is empty.
    """
    labels = np.asarray(labels, dtype=np.int64)
    _check_bags(features_per_image, labels, "training")
    n_classes = int(labels.max()) + 1 if num_classes is None else int(num_classes)
    set_seed(seed)
    rng = np.random.default_rng(seed)
    mean, variance = _feature_moments(features_per_image)
    head = build_attention_mil_head(
        int(features_per_image[0].shape[1]), n_classes, params, mean, variance
    )
    # Trained through its probability output only (class weights need a single output).
    trainer = keras.Model(head.inputs, head.outputs[0])
    trainer.compile(
        optimizer=keras.optimizers.Adam(float(params["learning_rate"])),
        loss="sparse_categorical_crossentropy",
    )
    bags, mask = pad_bags(features_per_image, params.get("max_tiles"), rng)
    validation_data, callbacks = _early_stopping(validation, params, rng)
    history = trainer.fit(
        [bags, mask],
        labels,
        batch_size=int(params["batch_size"]),
        epochs=int(params["epochs"]),
        class_weight=class_weights(labels, n_classes),
        validation_data=validation_data,
        callbacks=callbacks,
        verbose=0,
    ).history
    logger.info(
        "Attention head fitted on %d images (%d tiles): %d epochs, best %s loss %.4f",
        len(features_per_image),
        int(mask.sum()),
        len(history["loss"]),
        "validation" if validation is not None else "training",
        min(history.get("val_loss", history["loss"])),
    )
    return head


def _early_stopping(
    validation: tuple[Sequence[np.ndarray], np.ndarray] | None,
    params: Mapping[str, Any],
    rng: np.random.Generator,
) -> tuple[Any, list[keras.callbacks.Callback]]:
    """Keras's ``validation_data`` of the validation bags and the early stopping on them."""
    if validation is None:
        return None, []
    labels = np.asarray(validation[1], dtype=np.int64)
    _check_bags(validation[0], labels, "validation")
    data = ([*pad_bags(validation[0], params.get("max_tiles"), rng)], labels)
    stopping = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=int(params["patience"]), restore_best_weights=True
    )
    return data, [stopping]


def _check_bags(bags: Sequence[np.ndarray], labels: np.ndarray, name: str) -> None:
    if len(bags) == 0:
        raise ValueError(f"the attention head needs {name} images; got none")
    if len(bags) != len(labels):
        raise ValueError(f"{len(bags)} {name} bags but {len(labels)} labels")
    empty = [i for i, bag in enumerate(bags) if len(bag) == 0]
    if empty:
        raise ValueError(f"{name} images {empty[:5]} have no tile; every image needs one")


def attention_aggregate(
    head: keras.Model, features_per_image: Sequence[np.ndarray]
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Image probabilities and tile attention weights from the head, over every tile.

    Args:
        head: A head of :func:`fit_attention_head` (or loaded from its file).
        features_per_image: One ``(n_i, d)`` array per image, ``n_i >= 1``.

    Returns:
        ``(image_proba (n_images, k) float64, attention)``: ``attention[i]`` holds image
        ``i``'s ``n_i`` tile weights (summing to 1), in its rows' order.

    Raises:
        ValueError: An image has no tile.
    """
    empty = [i for i, bag in enumerate(features_per_image) if len(bag) == 0]
    if empty:
        raise ValueError(f"images {empty[:5]} have no tile; every image needs one")
    n_classes = int(head.outputs[0].shape[-1])
    proba = np.empty((len(features_per_image), n_classes), dtype=np.float64)
    attention: list[np.ndarray] = [np.empty(0)] * len(features_per_image)
    # Bags of similar length share a pass, so little of it is padding.
    order = np.argsort([len(bag) for bag in features_per_image], kind="stable")
    for start in range(0, len(order), PREDICT_BAGS):
        rows = order[start : start + PREDICT_BAGS]
        bags, mask = pad_bags([features_per_image[i] for i in rows])
        batch_proba, weights = head([bags, mask], training=False)
        proba[rows] = np.asarray(batch_proba, dtype=np.float64)
        for i, row_weights in zip(rows, np.asarray(weights, dtype=np.float64), strict=True):
            attention[i] = row_weights[: len(features_per_image[i])]
    return proba, attention


def aggregate_tile_features(
    head: keras.Model, tile_features: np.ndarray, tile_image: np.ndarray, n_images: int
) -> tuple[np.ndarray, np.ndarray]:
    """Image probabilities and each tile's attention weight, from a split's tile rows.

    Args:
        head: The attention head.
        tile_features: ``(n_tiles, d)`` penultimate features of the tiles.
        tile_image: ``(n_tiles,)`` the row of each tile's image.
        n_images: Images in the split.

    Returns:
        ``(image_proba (n_images, k), tile_attention (n_tiles,))``, the weights in the tile
        rows' order (each image's summing to 1).

    Raises:
        ValueError: As :func:`bags_from_tiles`.
    """
    bags = bags_from_tiles(tile_features, tile_image, n_images)
    proba, attention = attention_aggregate(head, bags)
    order = np.argsort(np.asarray(tile_image, dtype=np.int64), kind="stable")
    tile_attention = np.empty(len(order), dtype=np.float64)
    tile_attention[order] = np.concatenate(attention)
    return proba, tile_attention
