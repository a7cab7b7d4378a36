"""The out-of-distribution score the served model carries, fitted on the training features."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import numpy as np
import pandas as pd

from breast_cancer_pipeline.evaluation.ood import METHOD, OodScore, fit_ood, ood_images
from breast_cancer_pipeline.tiles import spec_of_arrays

logger = logging.getLogger(__name__)

#: The sets of the score table, in plot order (``ood``: the synthetic out-of-distribution set).
SETS = ("train", "val", "test", "ood")


def _features_of_sets(
    forward: Any, model_input: dict[str, np.ndarray], params: dict
) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
    """The penultimate features of each of :data:`SETS`, and the kind of each image."""
    from breast_cancer_pipeline.serving.model import penultimate_features

    x_train = np.asarray(model_input["x_train"])
    size, channels = (x_train.shape[1], x_train.shape[2]), x_train.shape[3]
    settings = params["ood_images"]
    ood, kinds = ood_images(settings["per_kind"], size, channels, settings["seed"])
    spec = spec_of_arrays(model_input)
    class_names = [str(c) for c in model_input["class_names"]]
    labels = "y" if spec is None else "image_y"
    features, kind_of = {}, {}
    for name in SETS[:3]:
        features[name] = penultimate_features(
            forward, np.asarray(model_input[f"x_{name}"]), params["batch_size"]
        )
        kind_of[name] = [class_names[i] for i in np.asarray(model_input[f"{labels}_{name}"])]
    features["ood"] = penultimate_features(forward, ood, params["batch_size"])
    kind_of["ood"] = list(kinds)
    return features, kind_of


def per_image_scores(
    values: np.ndarray, model_input: dict[str, np.ndarray], split: str
) -> np.ndarray:
    """A split's scores per image: the mean of its tiles' scores (tiles), else ``values``."""
    if spec_of_arrays(model_input) is None or split not in SETS[:3]:
        return values
    image = np.asarray(model_input[f"tile_image_{split}"])
    n_images = len(model_input[f"paths_{split}"])
    sums = np.bincount(image, weights=values, minlength=n_images)
    return sums / np.maximum(np.bincount(image, minlength=n_images), 1)


def _score_table(
    score: OodScore,
    energy: OodScore,
    threshold: float,
    features: dict[str, np.ndarray],
    kind_of: dict[str, list[str]],
    model_input: dict[str, np.ndarray],
) -> pd.DataFrame:
    frames = []
    for name in SETS:
        values = per_image_scores(score.score(features[name]), model_input, name)
        frames.append(
            pd.DataFrame(
                {
                    "set": name,
                    "kind": kind_of[name],
                    "score": values,
                    "in_distribution": values <= threshold,
                    "energy_score": per_image_scores(
                        energy.score(features[name]), model_input, name
                    ),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def fit_ood_score(
    classifier: Any, model_input: dict[str, np.ndarray], params: dict, ood_settings: dict
) -> tuple[OodScore, pd.DataFrame]:
    """Fit the served out-of-distribution score and score every split and the OOD set.

    The score is :data:`~breast_cancer_pipeline.evaluation.ood.METHOD` on the classifier's
    penultimate features (the forward pass the server runs,
    :func:`breast_cancer_pipeline.serving.compiled_forward`), fitted on the training split;
    its threshold accepts ``accept_rate`` of the validation split. The energy score is
    computed on the same features for comparison. With tiles, the score is fitted on the
    training tiles' features and an image's score is the mean of its tiles' scores: the
    threshold is taken on the validation images' means, and the table has one row per image.

    Args:
        classifier: The trained Keras classifier (ends with its ``Dense`` layer).
        model_input: The model input arrays (``x_<split>``, ``y_<split>``).
        params: The ``reporting`` parameters (``batch_size``, ``ood_images``).
        ood_settings: ``inference.serving.ood`` (``accept_rate`` sets the threshold).

    Returns:
        ``(score, table)``: the fitted :class:`~breast_cancer_pipeline.evaluation.ood.OodScore`
        (packaged with the served model), and one row per image of the train, val, test and
        synthetic OOD sets (:func:`~breast_cancer_pipeline.evaluation.ood.ood_images`):
        ``set``, ``kind`` (the OOD kind; the class for the splits), ``score``,
        ``in_distribution`` and ``energy_score``.

    Raises:
        ValueError: The classifier does not end with a ``Dense`` layer.
    """
    from breast_cancer_pipeline.serving import compiled_forward, penultimate_layer

    started = time.perf_counter()
    features, kind_of = _features_of_sets(compiled_forward(classifier), model_input, params)
    y_train = np.asarray(model_input["y_train"])
    score = fit_ood(METHOD, features["train"], y_train, features["val"])
    kernel, bias = (
        np.asarray(w, dtype=np.float64) for w in penultimate_layer(classifier).get_weights()
    )
    energy = fit_ood("energy", features["train"], y_train, features["val"], (kernel, bias))
    if spec_of_arrays(model_input) is not None:  # an image's score: its tiles' mean
        score, energy = (
            dataclasses.replace(
                fitted,
                val_scores=np.sort(
                    per_image_scores(fitted.score(features["val"]), model_input, "val")
                ),
            )
            for fitted in (score, energy)
        )
    threshold = score.threshold(ood_settings["accept_rate"])
    table = _score_table(score, energy, threshold, features, kind_of, model_input)
    logger.info(
        "Out-of-distribution score (%s) fitted on %d training images, threshold %.4g; "
        "%d images scored in %.1f s",
        METHOD,
        len(features["train"]),
        threshold,
        len(table),
        time.perf_counter() - started,
    )
    return score, table
