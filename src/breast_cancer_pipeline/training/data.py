"""The input pipeline: ``tf.data`` batches over (memory-mapped) ``uint8`` arrays.

- :func:`make_dataset`: indices are shuffled and batched, each batch is gathered from the
  arrays in one read, and batches are prefetched while the model trains. Optional minority
  oversampling draws every class equally often.
- :func:`resolve_class_weights`: ``auto`` | ``none`` | explicit per-class weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from breast_cancer_pipeline.metrics import class_weights


def make_dataset(
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    batch_size: int,
    *,
    training: bool,
    seed: int,
    oversample: bool = False,
) -> tuple[tf.data.Dataset, int]:
    """A ``tf.data`` pipeline of ``(uint8 images, one-hot labels)`` batches.

    The arrays stay where they are (a memory map is read batch by batch): the pipeline
    shuffles indices, batches them, gathers each batch from ``x`` in one sorted read on a
    background thread and prefetches. Augmentation is not done here; it lives in the model.

    Args:
        x: Images, ``N×H×W×C`` ``uint8`` (a ``np.memmap`` is fine).
        y: Class indices, length ``N``.
        n_classes: Number of classes (one-hot width).
        batch_size: Images per batch (global batch under a distribution strategy).
        training: Shuffle every epoch (and oversample, if asked); otherwise keep the order.
        seed: Seed of the shuffling and sampling.
        oversample: Draw each class with equal probability (minority oversampling); an epoch
            still has ``N`` images.

    Returns:
        ``(dataset, steps_per_epoch)``; pass both to ``model.fit`` (the oversampled dataset
        repeats forever, so ``steps_per_epoch`` bounds the epoch).

    Raises:
        ValueError: ``x`` and ``y`` differ in length, or a label is outside ``n_classes``.
    """
    y = np.asarray(y, dtype=np.int64)
    n = len(y)
    if len(x) != n:
        raise ValueError(f"make_dataset: {len(x)} images but {n} labels")
    if n and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"make_dataset: labels must be in [0, {n_classes}), got {y.min()}..")
    indices = _indices(y, n_classes, training=training, seed=seed, oversample=oversample)
    dataset = indices.batch(batch_size).map(
        _batch_loader(x, y, n_classes), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    options = tf.data.Options()
    # Every worker of a cluster builds the same pipeline and takes its share of each batch.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    options.deterministic = True
    steps = max(1, math.ceil(n / batch_size))
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE), steps


def _indices(
    y: np.ndarray, n_classes: int, *, training: bool, seed: int, oversample: bool
) -> tf.data.Dataset:
    """Image indices: in order, shuffled every epoch, or drawn class-balanced forever."""
    if not (training and oversample):
        indices = tf.data.Dataset.range(len(y))
        if training:
            indices = indices.shuffle(len(y), seed=seed, reshuffle_each_iteration=True)
        return indices
    per_class = [
        tf.data.Dataset.from_tensor_slices(np.flatnonzero(y == c))
        .shuffle(max(1, int((y == c).sum())), seed=seed + c, reshuffle_each_iteration=True)
        .repeat()
        for c in range(n_classes)
        if (y == c).any()
    ]
    return tf.data.Dataset.sample_from_datasets(
        per_class, weights=[1.0 / len(per_class)] * len(per_class), seed=seed
    )


def _batch_loader(x: np.ndarray, y: np.ndarray, n_classes: int) -> Any:
    """The ``map`` function that turns a batch of indices into images and one-hot labels."""
    shape = tuple(x.shape[1:])
    eye = np.eye(n_classes, dtype=np.float32)

    def gather(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        order = np.sort(batch)  # one forward pass over the memory map
        return np.asarray(x[order]), eye[y[order]]

    def load(batch: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        images, labels = tf.numpy_function(gather, [batch], [tf.uint8, tf.float32])
        images.set_shape((None, *shape))
        labels.set_shape((None, n_classes))
        return images, labels

    return load


def resolve_class_weights(
    setting: str | Mapping[str, float] | Sequence[float],
    y: np.ndarray,
    class_names: Sequence[str],
    oversample: bool,
) -> dict[int, float] | None:
    """Class weights for ``model.fit`` from the ``class_weight`` parameter.

    The parameter's form (and positive weights) is checked by the ``finetune`` schema; what
    depends on the data is checked here.

    Args:
        setting: ``"auto"`` (balanced, :func:`breast_cancer_pipeline.metrics.class_weights`),
            ``"none"``, a mapping ``{class name: weight}`` (unnamed classes get 1), or a list
            in class order.
        y: The training labels.
        class_names: Class names in index order.
        oversample: Minority oversampling is on; ``auto`` then gives no weights (the batches
            are balanced already).

    Returns:
        ``{class index: weight}`` or ``None``.

    Raises:
        ValueError: An unknown class name, a list of the wrong length, or an unrecognised
            setting.
    """
    n_classes = len(class_names)
    if setting == "none" or (setting == "auto" and oversample):
        return None
    if setting == "auto":
        return class_weights(y, n_classes)
    if isinstance(setting, Mapping):
        unknown = sorted(set(setting) - set(class_names))
        if unknown:
            raise ValueError(
                f"finetune.class_weight names unknown classes {unknown}; the classes are "
                f"{list(class_names)}"
            )
        return {i: float(setting.get(name, 1.0)) for i, name in enumerate(class_names)}
    if isinstance(setting, Sequence) and not isinstance(setting, str):
        if len(setting) != n_classes:
            raise ValueError(
                f"finetune.class_weight lists {len(setting)} weights for {n_classes} classes "
                f"({list(class_names)})"
            )
        return {i: float(w) for i, w in enumerate(setting)}
    raise ValueError(
        "finetune.class_weight must be auto, none, {class: weight} or a list of weights, "
        f"got {setting!r}"
    )
