"""Backbone selection on cached features.

With the base frozen, a backbone's pooled features are a pure function of the image: each
candidate's features are computed once, then a small head is trained on them for several
seeds. The comparison costs little more than one forward pass per backbone, instead of the
notebooks' frozen base recomputed every epoch.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import pandas as pd

from breast_cancer_pipeline.backbones import check_weights, get_backbone

logger = logging.getLogger(__name__)

METRICS = ("val_auroc", "val_accuracy")


def extract_features(
    model_input: dict[str, np.ndarray], candidate: dict, params: dict
) -> dict[str, np.ndarray]:
    """Run a candidate's frozen backbone once over the train and validation images.

    Args:
        model_input: Arrays from the augmentation pipeline.
        candidate: This candidate's parameters (``backbone``, ``weights``).
        params: The ``backbone_selection`` parameters.

    Returns:
        ``features_train``, ``features_val``, ``y_train``, ``y_val``, and the measured
        ``extract_seconds`` and ``ms_per_image`` (0-d arrays).
    """
    from breast_cancer_pipeline.modeling import build_feature_extractor, set_seed  # noqa: PLC0415

    spec = get_backbone(candidate.get("backbone"), "backbone_selection.candidates.*.backbone")
    check_weights(candidate.get("weights"), spec, f"candidate {spec.name} weights")
    set_seed(params["seed"])
    x_train, x_val = model_input["x_train"], model_input["x_val"]
    extractor = build_feature_extractor(
        spec.name, x_train.shape[1], x_train.shape[3], candidate.get("weights")
    )
    batch = params["extraction_batch_size"]
    started = time.perf_counter()
    features_train = extractor.predict(np.asarray(x_train), batch_size=batch, verbose=0)
    features_val = extractor.predict(np.asarray(x_val), batch_size=batch, verbose=0)
    seconds = time.perf_counter() - started
    ms_per_image = 1000.0 * seconds / (len(x_train) + len(x_val))
    logger.info(
        "%s: %d features per image, extracted in %.1f s (%.1f ms/image)",
        spec.name,
        features_train.shape[1],
        seconds,
        ms_per_image,
    )
    return {
        "features_train": features_train.astype(np.float32),
        "features_val": features_val.astype(np.float32),
        "y_train": np.asarray(model_input["y_train"]),
        "y_val": np.asarray(model_input["y_val"]),
        "extract_seconds": np.asarray(seconds),
        "ms_per_image": np.asarray(ms_per_image),
    }


def train_head(features: dict[str, np.ndarray], candidate: dict, params: dict) -> dict[str, Any]:
    """Train the classification head on cached features, once per seed, and score it.

    Returns:
        The candidate's record: metrics as mean and std over ``repeats`` seeds, timings and
        the settings used.
    """
    import keras  # noqa: PLC0415

    from breast_cancer_pipeline.modeling import build_head_model, set_seed  # noqa: PLC0415

    head = params["head"]
    y_train, y_val = features["y_train"], features["y_val"]
    n_classes = int(max(y_train.max(), y_val.max())) + 1
    scores: dict[str, list[float]] = {m: [] for m in METRICS}
    started = time.perf_counter()
    for repeat in range(params["repeats"]):
        set_seed(params["seed"] + repeat)
        model = build_head_model(features["features_train"].shape[1], n_classes, head)
        model.compile(
            optimizer=keras.optimizers.Adam(head["learning_rate"]),
            loss="sparse_categorical_crossentropy",
        )
        model.fit(
            features["features_train"],
            y_train,
            epochs=params["epochs"],
            batch_size=head["batch_size"],
            class_weight=class_weights(y_train, n_classes),
            verbose=0,
        )
        proba = model.predict(features["features_val"], batch_size=256, verbose=0)
        scores["val_auroc"].append(auroc(y_val, proba))
        scores["val_accuracy"].append(float(np.mean(y_val == proba.argmax(axis=1))))
    record = {
        "backbone": candidate["backbone"],
        "weights": candidate.get("weights"),
        **{f"{m}_mean": float(np.mean(v)) for m, v in scores.items()},
        **{f"{m}_std": float(np.std(v)) for m, v in scores.items()},
        "repeats": params["repeats"],
        "epochs": params["epochs"],
        "n_features": int(features["features_train"].shape[1]),
        "extract_seconds": round(float(features["extract_seconds"]), 3),
        "train_seconds": round(time.perf_counter() - started, 3),
        "ms_per_image": round(float(features["ms_per_image"]), 3),
    }
    logger.info(
        "%s: validation AUROC %.3f ± %.3f",
        candidate["backbone"],
        record["val_auroc_mean"],
        record["val_auroc_std"],
    )
    return record


def select_backbone(
    params: dict, *records: dict[str, Any]
) -> tuple[dict[str, Any], pd.DataFrame, dict[str, Any]]:
    """Pick the best candidate; near-ties go to the cheaper one at inference.

    Candidates within ``tolerance`` of the best ``metric`` are ranked by lower
    ``ms_per_image``.

    Returns:
        ``(selected, comparison, mlflow_metrics)``.

    Raises:
        ValueError: The candidates that ran differ from ``backbone_selection.candidates``.
    """
    names = list(params["candidates"])
    if len(records) != len(names):
        raise ValueError(
            f"backbone_selection ran {len(records)} candidates but the parameters list "
            f"{len(names)} ({', '.join(names)}). The pipeline reads its candidates from "
            "conf/base and the environment in KEDRO_ENV: run with KEDRO_ENV=<env> "
            "(e.g. KEDRO_ENV=demo kedro run) when an environment changes the candidates"
        )
    metric = f"{params['metric']}_mean"
    table = pd.DataFrame([{"candidate": n, **r} for n, r in zip(names, records, strict=True)])
    best = table[metric].max()
    table["within_tolerance"] = table[metric] >= best - params["tolerance"]
    ranked = table.sort_values(
        ["within_tolerance", "ms_per_image", metric], ascending=[False, True, False]
    )
    table["rank"] = ranked.index.to_series().argsort().to_numpy() + 1
    winner = ranked.iloc[0]
    selected = {
        "candidate": winner["candidate"],
        "backbone": winner["backbone"],
        "weights": winner["weights"],
        "metric": params["metric"],
        "score": float(winner[metric]),
        "rule": f"best {params['metric']}; within {params['tolerance']} of it, fastest",
        "head": dict(params["head"]),
    }
    logger.info("Selected backbone %s (%s %.3f)", selected["backbone"], metric, selected["score"])
    mlflow_metrics = {
        f"selection.{row['candidate']}.{key}": {"value": float(row[key]), "step": 0}
        for _, row in table.iterrows()
        for key in (*(f"{m}_mean" for m in METRICS), "extract_seconds", "ms_per_image")
    }
    return selected, table.sort_values("rank").reset_index(drop=True), mlflow_metrics


def class_weights(y: np.ndarray, n_classes: int) -> dict[int, float]:
    """Balanced class weights ``n / (k * count)``; classes absent from ``y`` get 1."""
    counts = np.bincount(y, minlength=n_classes)
    total = counts.sum()
    return {i: float(total / (n_classes * c)) if c else 1.0 for i, c in enumerate(counts)}


def auroc(y: np.ndarray, proba: np.ndarray) -> float:
    """AUROC: binary for two classes, else macro one-vs-rest."""
    from sklearn.metrics import roc_auc_score  # noqa: PLC0415

    if proba.shape[1] == 2:
        return float(roc_auc_score(y, proba[:, 1]))
    return float(roc_auc_score(y, proba, multi_class="ovr", average="macro"))
