"""The nodes around each fold's fine-tuning (``evaluation.folds`` ≥ 2).

- :func:`assign_cv_folds`: the fold of every development image, and each fold's roles.
- :func:`fold_model_input`: the model input of one fold's run (train, val, held-out fold,
  and the test split unchanged), which the finetune node trains on as it would on the split.
- :func:`predict_fold`: the fold model's probabilities on its held-out fold and on the test
  split (for the ensemble).
- :func:`collect_out_of_fold`: every held-out prediction in one table, with its fold.

Fold assignment itself lives in :mod:`breast_cancer_pipeline.evaluation.folds`.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from breast_cancer_pipeline.evaluation.folds import assign_folds, fold_roles
from breast_cancer_pipeline.evaluation.predictions import classifier_predictions
from breast_cancer_pipeline.geometry import ARRAY_KEYS
from breast_cancer_pipeline.tiles import TILE_SPLIT_KEYS, spec_of_arrays

logger = logging.getLogger(__name__)

#: The model-input splits a fold's arrays are drawn from (the development images).
_SOURCES = ("train", "val")


def assign_cv_folds(manifest: pd.DataFrame, params: dict) -> tuple[pd.DataFrame, ...]:
    """The fold of every development image, then each fold's roles (train, val, holdout).

    Args:
        manifest: The validated manifest.
        params: The ``evaluation`` parameters (``folds``, ``fold_seed``, ``fold_val_share``).

    Returns:
        ``(folds, roles of fold 1, ..., roles of fold k)``: see
        :func:`~breast_cancer_pipeline.evaluation.folds.assign_folds` and
        :func:`~breast_cancer_pipeline.evaluation.folds.fold_roles`.
    """
    k, seed = params["folds"], params["fold_seed"]
    folds = assign_folds(manifest, k, seed)
    roles = [fold_roles(folds, i, params["fold_val_share"], seed) for i in range(1, k + 1)]
    counts = folds.groupby("fold").agg(images=("path", "size"), patients=("group", "nunique"))
    logger.info("Cross-validation folds (by patient, stratified):\n%s", counts.to_string())
    return (folds, *roles)


def fold_model_input(
    model_input: dict[str, np.ndarray], roles: pd.DataFrame
) -> dict[str, np.ndarray]:
    """The arrays of one fold's run, in the layout the finetune node trains on.

    Args:
        model_input: The model-input arrays of the split (``x_train``, ``x_val``, ``x_test``...).
        roles: The fold's roles (``path``, ``role``) from :func:`assign_cv_folds`.

    Returns:
        ``x/y/paths_train`` and ``x/y/paths_val`` (the fold's training and validation
        images), ``x/y/paths_holdout`` (the held-out fold), ``x/y/paths_test`` (the test
        split, unchanged), ``class_names`` and how the images were made (``resize``,
        ``crop_margin``). With tiles (``tiles``), each role holds the tiles of its images
        (``x``, ``y``, ``tile_image``, ``tile_boxes``) and the images' ``paths`` and
        ``image_y``: folds split images, never an image's tiles.

    Raises:
        ValueError: A development image of ``roles`` has no array, or the reverse.
    """
    paths = np.concatenate([np.asarray(model_input[f"paths_{s}"]) for s in _SOURCES])
    position = {str(p): i for i, p in enumerate(paths)}
    if set(position) != set(roles["path"]):
        unknown = sorted(set(roles["path"]) ^ set(position))
        raise ValueError(
            f"the fold assignment and the model input differ in {len(unknown)} images (first: "
            f"{unknown[0]!r}): rerun the augmentation pipeline on the validated manifest"
        )
    arrays: dict[str, np.ndarray] = {"class_names": np.asarray(model_input["class_names"])}
    shared = (*ARRAY_KEYS, "tiles")
    arrays |= {key: np.asarray(model_input[key]) for key in shared if key in model_input}
    tiled = spec_of_arrays(model_input) is not None
    for role in ("train", "val", "holdout"):
        index = np.array([position[p] for p in roles.loc[roles["role"] == role, "path"]], int)
        if tiled:
            arrays |= _tile_role(model_input, role, index)
            continue
        for key in ("x", "y", "paths"):
            source = [model_input[f"{key}_{s}"] for s in _SOURCES]
            arrays[f"{key}_{role}"] = _take(source, index)
    test_keys = ("x", "y", "paths", *(TILE_SPLIT_KEYS if tiled else ()))
    for key in test_keys:
        arrays[f"{key}_test"] = model_input[f"{key}_test"]
    return arrays


def _tile_role(
    model_input: dict[str, np.ndarray], role: str, index: np.ndarray
) -> dict[str, np.ndarray]:
    """The tile arrays of the development images ``index`` (positions in train then val).

    A fold takes whole images, so an image's tiles stay together with its patient.
    """
    counts = [len(model_input[f"paths_{s}"]) for s in _SOURCES]
    offsets = np.cumsum([0, *counts])[:-1]
    image_of_tile = np.concatenate(
        [
            np.asarray(model_input[f"tile_image_{s}"]) + o
            for s, o in zip(_SOURCES, offsets, strict=True)
        ]
    )
    new_row = np.full(sum(counts), -1, dtype=np.int64)
    new_row[index] = np.arange(len(index))
    tile_row = new_row[image_of_tile]
    keep = np.flatnonzero(tile_row >= 0)
    keep = keep[np.argsort(tile_row[keep], kind="stable")]

    def concat(key: str) -> np.ndarray:
        return np.concatenate([np.asarray(model_input[f"{key}_{s}"]) for s in _SOURCES])

    return {
        f"x_{role}": _take([model_input[f"x_{s}"] for s in _SOURCES], keep),
        f"y_{role}": concat("y")[keep],
        f"tile_image_{role}": tile_row[keep],
        f"tile_boxes_{role}": concat("tile_boxes")[keep],
        f"paths_{role}": concat("paths")[index],
        f"image_y_{role}": concat("image_y")[index],
    }


def _take(parts: list[np.ndarray], index: np.ndarray) -> np.ndarray:
    """Rows ``index`` of the concatenation of ``parts``, reading only those rows."""
    offsets = np.cumsum([0, *(len(p) for p in parts)])
    dtype = np.result_type(*(p.dtype for p in parts))
    out = np.empty((len(index), *parts[0].shape[1:]), dtype=dtype)
    for part, low, high in zip(parts, offsets[:-1], offsets[1:], strict=True):
        inside = (index >= low) & (index < high)
        out[inside] = part[index[inside] - low]
    return out


def predict_fold(
    classifier: Any, model_input: dict[str, np.ndarray], params: dict
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The fold model's class probabilities on its held-out fold and on the test split.

    Args:
        classifier: The fold's classifier.
        model_input: The fold's arrays (:func:`fold_model_input`).
        params: The ``reporting`` parameters (``batch_size``; ``positive_class``, which the
            tiles' aggregation scores).

    Returns:
        ``(held-out predictions, test predictions)``, the columns of
        :func:`~breast_cancer_pipeline.evaluation.predictions.prediction_frame`.
    """
    batch, positive = params["batch_size"], params["positive_class"]
    return (
        classifier_predictions(classifier, model_input, "holdout", batch, positive),
        classifier_predictions(classifier, model_input, "test", batch, positive),
    )


def collect_out_of_fold(folds: pd.DataFrame, *holdout: pd.DataFrame) -> pd.DataFrame:
    """Every development image's out-of-fold prediction, with its fold, in manifest order.

    Args:
        folds: The fold assignment (:func:`assign_cv_folds`).
        *holdout: Each fold's held-out predictions, fold 1 first.

    Returns:
        ``path``, ``fold``, then the prediction columns (``label``, ``predicted``,
        ``p_<class>``).

    Raises:
        ValueError: An image is predicted by no fold, by two, or by a fold it is not in.
    """
    frames = [frame.assign(fold=i) for i, frame in enumerate(holdout, start=1)]
    oof = pd.concat(frames, ignore_index=True)
    expected = folds.set_index("path")["fold"]
    counts = oof["path"].value_counts()
    wrong = sorted(
        set(expected.index) - set(counts.index)
        | set(counts.index[counts > 1])
        | {p for p, f in zip(oof["path"], oof["fold"], strict=True) if expected.get(p) != f}
    )
    if wrong:
        raise ValueError(
            f"{len(wrong)} development images lack exactly one out-of-fold prediction by "
            f"their own fold (first: {wrong[0]!r}): rerun the finetune pipeline"
        )
    oof = oof.set_index("path").loc[expected.index].reset_index()
    return oof[["path", "fold", *[c for c in oof.columns if c not in ("path", "fold")]]]
