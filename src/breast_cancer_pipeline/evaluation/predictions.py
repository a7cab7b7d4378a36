"""The predictions table of a split, and the arrays the metrics read from it.

One row per image: ``path``, ``label``, ``predicted`` (the most probable class) and one
``p_<class>`` column per class of the model. Cross-validation writes it for each fold model,
reporting for the served model. With tiles, the network's rows are tiles: :func:`image_proba`
makes them image rows first.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from breast_cancer_pipeline.tiles import image_classes, image_probabilities, spec_of_arrays


def prediction_frame(model_input: dict, split: str, proba: np.ndarray) -> pd.DataFrame:
    """The predictions table of one split from its class probabilities.

    Args:
        model_input: The model-input arrays (``paths_<split>``, ``y_<split>``, class names;
            with tiles, ``image_y_<split>`` holds the image labels).
        split: ``val``, ``test``, or another split of ``model_input``.
        proba: ``(N, k)`` class probabilities of the split's images, in order (with tiles,
            from :func:`image_proba`).

    Returns:
        One row per image: ``path``, ``label``, ``predicted`` (argmax) and ``p_<class>``.
    """
    spec = spec_of_arrays(model_input)
    class_names = image_classes(list(np.asarray(model_input["class_names"])), spec)
    y = np.asarray(model_input[f"y_{split}" if spec is None else f"image_y_{split}"])
    frame = pd.DataFrame(
        {"path": np.asarray(model_input[f"paths_{split}"]), "label": [class_names[i] for i in y]}
    )
    return with_probabilities(frame, proba, class_names)


def with_probabilities(
    frame: pd.DataFrame, proba: np.ndarray, class_names: list[str]
) -> pd.DataFrame:
    """A copy of ``frame`` whose ``predicted`` and ``p_<class>`` columns hold ``proba``.

    Args:
        frame: A predictions table (or its ``path`` and ``label`` columns).
        proba: ``(N, k)`` class probabilities, one row per row of ``frame``.
        class_names: The model's classes, in the order of ``proba``'s columns.
    """
    proba = np.asarray(proba)
    out = frame.copy()
    out["predicted"] = [class_names[i] for i in proba.argmax(axis=1)]
    for i, name in enumerate(class_names):
        out[f"p_{name}"] = proba[:, i].astype(float)
    return out


def image_proba(
    model_input: dict, split: str, proba: np.ndarray, positive_class: str | None = None
) -> np.ndarray:
    """The image-level probabilities of a split from the network's rows of ``x_<split>``.

    Whole images: ``proba`` itself. Tiles: each image's tiles combined by
    :func:`~breast_cancer_pipeline.tiles.image_probabilities` (the rule of
    ``augmentation.tiles.aggregation``; the internal background class left out).

    Args:
        model_input: The model-input arrays (``tiles``, ``tile_image_<split>``,
            ``paths_<split>`` when tiled).
        split: The split ``proba`` belongs to.
        proba: ``(rows of x_<split>, k)`` probabilities.
        positive_class: The class scored by ``max``, ``noisy_or`` and ``top_k_mean``.
    """
    spec = spec_of_arrays(model_input)
    if spec is None:
        return proba
    return image_probabilities(
        proba,
        np.asarray(model_input[f"tile_image_{split}"]),
        len(model_input[f"paths_{split}"]),
        spec,
        [str(c) for c in np.asarray(model_input["class_names"])],
        positive_class,
    )


def classifier_predictions(
    classifier: Any,
    model_input: dict,
    split: str,
    batch_size: int,
    positive_class: str | None = None,
) -> pd.DataFrame:
    """The bare classifier's predictions of one split: one view, no temperature.

    Args:
        classifier: A Keras classifier ending in its softmax.
        model_input: The model-input arrays (``x_<split>`` and those of
            :func:`prediction_frame`).
        split: The split to predict.
        batch_size: Images (or tiles) per forward pass.
        positive_class: With tiles, the class the aggregation scores (:func:`image_proba`).

    Returns:
        The columns of :func:`prediction_frame`, one row per image.
    """
    images = np.asarray(model_input[f"x_{split}"])
    proba = classifier.predict(images, batch_size=batch_size, verbose=0)
    proba = image_proba(model_input, split, proba, positive_class)
    return prediction_frame(model_input, split, proba)


def as_arrays(predictions: pd.DataFrame, class_names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Integer labels and the ``(n, k)`` probabilities, columns in the model's class order."""
    y = predictions["label"].map(class_names.index).to_numpy()
    return y, predictions[[f"p_{c}" for c in class_names]].to_numpy(dtype=float)


def binary_view(predictions: pd.DataFrame, positive: str) -> tuple[np.ndarray, np.ndarray]:
    """``(is_positive, score)``: whether each image is of class ``positive``, and p(positive)."""
    return (
        (predictions["label"] == positive).to_numpy(),
        predictions[f"p_{positive}"].to_numpy(dtype=float),
    )
