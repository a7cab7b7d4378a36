"""The predictions of each split, through the path the served model takes.

Every split but the fold models' is predicted by a
:class:`~breast_cancer_pipeline.serving.ServingModel` (test-time views averaged, then the
temperature and floor), so the report's figures are those of the served probabilities.
Each node returns a predictions table
(:func:`~breast_cancer_pipeline.evaluation.predictions.prediction_frame`).

With tiles (``augmentation.tiles``) the network's rows are tiles: their test-time views are
averaged per tile, the tiles combined per image
(:func:`~breast_cancer_pipeline.evaluation.predictions.image_proba`), and only then is the
temperature applied, so that every image-level output (threshold, calibration, conformal sets,
levels, external site) reads image rows as without tiles.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from breast_cancer_pipeline.evaluation.predictions import (
    classifier_predictions,
    image_proba,
    prediction_frame,
)
from breast_cancer_pipeline.evaluation.tta import tta_settings
from breast_cancer_pipeline.manifest import EXTERNAL_SPLIT
from breast_cancer_pipeline.progress import Progress
from breast_cancer_pipeline.serving.model import penultimate_features
from breast_cancer_pipeline.tiles import spec_of_arrays

from .nodes import package_model
from .parameters import check_positive_class

logger = logging.getLogger(__name__)

#: The threshold of the uncalibrated validation model: ``predict_proba`` never reads it.
_NOT_CHOSEN = {"threshold": 0.5, "rule": "not chosen yet (validation predictions)"}


def _predict(
    serving_model: Any, model_input: dict[str, np.ndarray], split: str, batch_size: int
) -> np.ndarray:
    """The split's image rows of :meth:`ServingModel.averaged_proba` (tiles combined).

    A tile model packaged with its attention head combines each image's tiles by the head,
    from the tiles' penultimate features (:meth:`ServingModel.attended`), as served.
    """
    images = np.asarray(model_input[f"x_{split}"])
    if serving_model.attention_head is not None:
        features = penultimate_features(serving_model.forward, images, batch_size)
        n_images = len(model_input[f"paths_{split}"])
        attended = serving_model.attended(
            features, np.asarray(model_input[f"tile_image_{split}"]), n_images
        )
        if attended is not None:
            return attended[0]
    proba = _averaged(serving_model, images, batch_size, split)
    if spec_of_arrays(model_input) is None:
        return proba
    return image_proba(model_input, split, proba, serving_model.config["positive_class"])


def _averaged(serving_model: Any, images: np.ndarray, batch_size: int, split: str) -> np.ndarray:
    """:meth:`ServingModel.averaged_proba` of ``images``, ``batch_size`` at a time."""
    progress = Progress(len(images), f"Predicting the {split} split", logger, unit="images")
    parts = []
    for start in range(0, len(images), batch_size):
        parts.append(serving_model.averaged_proba(images[start : start + batch_size]))
        progress.advance(len(parts[-1]))
    progress.finish()
    if not parts:
        return np.empty((0, len(serving_model.class_names)), dtype=np.float32)
    return np.concatenate(parts)


def predict_val_split(
    classifier: Any,
    model_input: dict[str, np.ndarray],
    metadata: dict[str, Any],
    reporting: dict,
    evaluation: dict,
    attention_head: Any = None,
) -> pd.DataFrame:
    """Validation probabilities of the serving model before recalibration.

    ``attention_head``: with ``augmentation.tiles.aggregation: attention``, the head that
    combines each image's tiles (packaged with the model, as served).

    Returns:
        One row per image: ``path``, ``label``, ``predicted``, ``p_<class>`` (views averaged,
        ``T = 1``).

    Raises:
        ValueError: ``reporting.positive_class`` is not one of the model's classes.
    """
    check_positive_class(reporting["positive_class"], metadata["class_names"])
    point = {**_NOT_CHOSEN, "positive_class": reporting["positive_class"]}
    uncalibrated, _ = package_model(classifier, metadata, point, {"tta": tta_settings(evaluation)})
    if attention_head is not None:
        uncalibrated = uncalibrated.with_attention_head(attention_head)
    proba = _predict(uncalibrated, model_input, "val", reporting["batch_size"])
    return prediction_frame(model_input, "val", proba)


def predict_split(
    serving_model: Any, model_input: dict[str, np.ndarray], split: str, batch_size: int
) -> pd.DataFrame:
    """A split's predictions as served (:meth:`ServingModel.predict_proba`), for any split.

    Returns:
        One row per image: ``path``, ``label``, ``predicted``, ``p_<class>``.
    """
    proba = serving_model.calibrate(_predict(serving_model, model_input, split, batch_size))
    return prediction_frame(model_input, split, proba)


def predict_test_split(
    serving_model: Any, model_input: dict[str, np.ndarray], reporting: dict
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Test probabilities of the packaged model, as served, and the two it is compared with.

    Returns:
        ``(served, uncalibrated, without_tta)``: tables like :func:`predict_val_split`'s;
        ``served`` holds :meth:`ServingModel.predict_proba`'s probabilities (views averaged,
        then the temperature and floor), ``uncalibrated`` the same before them,
        ``without_tta`` the original image alone, recalibrated the same way (the same
        forward passes as ``served`` when ``tta`` is off).
    """
    batch = reporting["batch_size"]
    raw = _predict(serving_model, model_input, "test", batch)
    if serving_model.config["tta"]["mode"] == "off":
        single = raw
    else:
        single = _predict(
            serving_model.with_config(tta={"mode": "off"}), model_input, "test", batch
        )
    return (
        prediction_frame(model_input, "test", serving_model.calibrate(raw)),
        prediction_frame(model_input, "test", raw),
        prediction_frame(model_input, "test", serving_model.calibrate(single)),
    )


def predict_external_split(
    serving_model: Any, external_input: dict[str, np.ndarray], params: dict
) -> pd.DataFrame:
    """Class probabilities for every image of the external site, as served (like the test split).

    Args:
        serving_model: The packaged model (test-time views and temperature applied).
        external_input: ``external_model_input`` (``x_external``, ``y_external``,
            ``paths_external``, ``class_names``).
        params: The ``reporting`` parameters (``batch_size``).

    Returns:
        The columns of :func:`predict_test_split`'s tables; no rows without an external site.
    """
    if len(external_input[f"y_{EXTERNAL_SPLIT}"]) == 0:
        columns = ["path", "label", "predicted"]
        columns += [f"p_{c}" for c in external_input["class_names"]]
        return pd.DataFrame(columns=columns)
    return predict_split(serving_model, external_input, EXTERNAL_SPLIT, params["batch_size"])


def predict_single_model_test(
    classifier: Any, model_input: dict[str, np.ndarray], params: dict
) -> pd.DataFrame:
    """The single model's test predictions, shown beside the served ensemble's.

    Args:
        classifier: The classifier fine-tuned on the single train/val split.
        model_input: The model-input arrays.
        params: The ``reporting`` parameters (``batch_size``, ``positive_class``).
    """
    return classifier_predictions(
        classifier, model_input, "test", params["batch_size"], params["positive_class"]
    )
