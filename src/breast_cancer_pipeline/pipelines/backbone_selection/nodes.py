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
    model_input: dict[str, np.ndarray],
    augmentation_spec: dict[str, Any],
    candidate: dict,
    params: dict,
) -> dict[str, np.ndarray]:
    """Run a candidate's frozen backbone once over the train and validation images.

    With ``augmented_passes: k`` the training images are also passed ``k`` more times through
    the augmentation layers, and those features are appended (labels repeated): the head then
    sees augmented views without the backbone running every epoch.

    Args:
        model_input: Arrays from the augmentation pipeline.
        augmentation_spec: The augmentation spec (used when ``augmented_passes`` > 0).
        candidate: This candidate's parameters (``backbone``, ``weights``).
        params: The ``backbone_selection`` parameters.

    Returns:
        ``features_train``, ``features_val``, ``y_train``, ``y_val``, and the measured
        ``extract_seconds``, ``ms_per_image`` and ``n_params`` (0-d arrays).

    Raises:
        UnknownBackboneError: The candidate names no registered backbone.
        ValueError: Invalid weights or ``augmented_passes``.
    """
    from breast_cancer_pipeline.modeling import (  # noqa: PLC0415
        build_augmenter,
        build_feature_extractor,
        set_seed,
    )
    from breast_cancer_pipeline.training import make_dataset  # noqa: PLC0415

    spec = get_backbone(candidate.get("backbone"), "backbone_selection.candidates.*.backbone")
    check_weights(candidate.get("weights"), spec, f"candidate {spec.name} weights")
    passes = params.get("augmented_passes", 0)
    if not isinstance(passes, int) or passes < 0:
        raise ValueError(
            f"backbone_selection.augmented_passes must be an integer ≥ 0, got {passes!r}"
        )
    set_seed(params["seed"])
    x_train, x_val = model_input["x_train"], model_input["x_val"]
    y_train = np.asarray(model_input["y_train"])
    extractor = build_feature_extractor(
        spec.name, x_train.shape[1], x_train.shape[3], candidate.get("weights")
    )
    batch = params["extraction_batch_size"]
    y_val = np.asarray(model_input["y_val"])
    n_classes = int(max(y_train.max(), y_val.max())) + 1

    def run(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        # Streamed from the (memory-mapped) arrays; the unknown batch dimension of tf.data
        # lets one traced function serve every call, partial last batches included.
        data, _ = make_dataset(x, y, n_classes, batch, training=False, seed=params["seed"])
        return extractor.predict(data, verbose=0)

    started = time.perf_counter()
    features_val = run(x_val, y_val)
    features_train = [run(x_train, y_train)]
    ms_per_image = 1000.0 * (time.perf_counter() - started) / (len(x_train) + len(x_val))
    for k in range(passes):
        augmenter = build_augmenter(augmentation_spec, seed=params["seed"] + 1 + k)
        views = np.concatenate(
            [
                np.asarray(augmenter(np.asarray(x_train[i : i + batch], np.float32), training=True))
                for i in range(0, len(x_train), batch)
            ]
        )
        views = np.clip(views, 0, 255).astype(np.uint8)
        features_train.append(run(views, y_train))
    seconds = time.perf_counter() - started
    logger.info(
        "%s: %d features per image, extracted in %.1f s (%.1f ms/image, %d augmented passes)",
        spec.name,
        features_train[0].shape[1],
        seconds,
        ms_per_image,
        passes,
    )
    return {
        "features_train": np.concatenate(features_train).astype(np.float32),
        "features_val": features_val.astype(np.float32),
        "y_train": np.tile(y_train, passes + 1),
        "y_val": y_val,
        "extract_seconds": np.asarray(seconds),
        "ms_per_image": np.asarray(ms_per_image),
        "n_params": np.asarray(extractor.count_params()),
    }


def fit_head(
    features: dict[str, np.ndarray], head: dict[str, Any], epochs: int, seed: int
) -> dict[str, float]:
    """Train one head on cached features and score it on the validation features.

    Args:
        features: The output of :func:`extract_features`.
        head: ``dropout``, ``dense_units``, ``learning_rate``, ``batch_size``.
        epochs: Training epochs.
        seed: Seed of the initialisation and shuffling.

    Returns:
        ``{"val_auroc": ..., "val_accuracy": ...}``.
    """
    import keras  # noqa: PLC0415

    from breast_cancer_pipeline.modeling import build_head_model, set_seed  # noqa: PLC0415

    y_train, y_val = features["y_train"], features["y_val"]
    n_classes = int(max(y_train.max(), y_val.max())) + 1
    set_seed(seed)
    model = build_head_model(features["features_train"].shape[1], n_classes, head)
    model.compile(
        optimizer=keras.optimizers.Adam(head["learning_rate"]),
        loss="sparse_categorical_crossentropy",
    )
    model.fit(
        np.asarray(features["features_train"]),
        y_train,
        epochs=epochs,
        batch_size=int(head["batch_size"]),
        class_weight=class_weights(y_train, n_classes),
        verbose=0,
    )
    proba = model.predict(np.asarray(features["features_val"]), batch_size=256, verbose=0)
    return {
        "val_auroc": auroc(y_val, proba),
        "val_accuracy": float(np.mean(y_val == proba.argmax(axis=1))),
    }


def train_head(features: dict[str, np.ndarray], candidate: dict, params: dict) -> dict[str, Any]:
    """Train the classification head on cached features, once per seed, and score it.

    Returns:
        The candidate's record: metrics as mean and std over ``repeats`` seeds, timings,
        the backbone's parameter count and the settings used.
    """
    scores: dict[str, list[float]] = {m: [] for m in METRICS}
    started = time.perf_counter()
    for repeat in range(params["repeats"]):
        result = fit_head(features, params["head"], params["epochs"], params["seed"] + repeat)
        for m in METRICS:
            scores[m].append(result[m])
    record = {
        "backbone": candidate["backbone"],
        "weights": candidate.get("weights"),
        **{f"{m}_mean": float(np.mean(v)) for m, v in scores.items()},
        **{f"{m}_std": float(np.std(v)) for m, v in scores.items()},
        "repeats": params["repeats"],
        "epochs": params["epochs"],
        "n_features": int(features["features_train"].shape[1]),
        "n_params": int(features["n_params"]) if "n_params" in features else None,
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
        for key in (
            *(f"{m}_{stat}" for m in METRICS for stat in ("mean", "std")),
            "extract_seconds",
            "train_seconds",
            "ms_per_image",
            "n_params",
        )
        if pd.notna(row.get(key))
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


def plot_comparison(comparison: pd.DataFrame, params: dict) -> Any:
    """A chart of every candidate: the metric (mean ± std over seeds) and the inference cost.

    Returns:
        A matplotlib figure: bars of the selection metric with error bars (the winner
        highlighted, the tolerance band shaded) beside bars of milliseconds per image.
    """
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    metric = params["metric"]
    table = comparison.sort_values("rank")
    names = table["candidate"].astype(str).tolist()
    colours = ["tab:green" if r == 1 else "tab:gray" for r in table["rank"]]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 0.5 * len(names) + 1.8), sharey=True)
    left.barh(names, table[f"{metric}_mean"], xerr=table[f"{metric}_std"], color=colours, capsize=3)
    best = table[f"{metric}_mean"].max()
    left.axvspan(best - params["tolerance"], best, color="tab:green", alpha=0.15, lw=0)
    low = max(0.0, float((table[f"{metric}_mean"] - table[f"{metric}_std"]).min()) - 0.05)
    left.set_xlim(low, min(1.0, best + 0.05) if best <= 1 else None)
    left.set_xlabel(
        f"validation {metric.removeprefix('val_')} (mean ± std, {table['repeats'].iloc[0]} seeds)"
    )
    left.invert_yaxis()
    right.barh(names, table["ms_per_image"], color=colours)
    right.set_xlabel("frozen-backbone inference, ms per image")
    fig.suptitle(
        f"Backbone selection: winner {names[0]} (within {params['tolerance']} of the best, "
        "the faster wins)",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def search_head(
    selected: dict[str, Any], params: dict, **candidate_features: dict[str, np.ndarray]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Optuna (TPE) search of the head on the winner's cached features.

    Searches dropout, learning rate, dense units and batch size for ``head_search.n_trials``
    trials, each a head trained for ``head_search.epochs`` and scored by the selection metric
    on the validation features. With ``n_trials: 0`` the configured ``head`` is returned.

    Args:
        selected: The selected backbone (its ``candidate`` names the features to use).
        params: The ``backbone_selection`` parameters.
        **candidate_features: Every candidate's cached features, keyed by candidate name.

    Returns:
        ``(best_head, mlflow_metrics)``: the best configuration (read by finetune) and every
        trial's score and settings as metric histories (step = trial number).

    Raises:
        ValueError: The search space is malformed; the message names the parameter.
    """
    search = params["head_search"]
    metric = params["metric"]
    default = {**params["head"], "score": selected["score"], "source": "backbone_selection.head"}
    if search["n_trials"] <= 0:
        return default, {}
    import optuna  # noqa: PLC0415

    space = search["space"]
    for key in ("dropout", "learning_rate"):
        if len(space[key]) != 2 or space[key][0] > space[key][1]:
            raise ValueError(
                f"backbone_selection.head_search.space.{key} must be [low, high], got {space[key]}"
            )
    features = candidate_features[selected["candidate"]]
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial: Any) -> float:
        head = {
            "dropout": trial.suggest_float("dropout", *space["dropout"]),
            "learning_rate": trial.suggest_float(
                "learning_rate", *space["learning_rate"], log=True
            ),
            "dense_units": trial.suggest_categorical("dense_units", list(space["dense_units"])),
            "batch_size": trial.suggest_categorical("batch_size", list(space["batch_size"])),
        }
        return fit_head(features, head, search["epochs"], params["seed"])[metric]

    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=params["seed"])
    )
    study.optimize(objective, n_trials=search["n_trials"])
    best = {
        **study.best_params,
        "score": float(study.best_value),
        "trial": study.best_trial.number,
        "n_trials": len(study.trials),
        "source": "head_search",
    }
    logger.info("Head search: best %s %.4f with %s", metric, best["score"], study.best_params)
    history: dict[str, list[dict[str, float]]] = {}
    for trial in study.trials:
        history.setdefault(f"head_search.{metric}", []).append(
            {"step": trial.number, "value": float(trial.value)}
        )
        for key, value in trial.params.items():
            history.setdefault(f"head_search.{key}", []).append(
                {"step": trial.number, "value": float(value or 0)}
            )
    history["head_search.best_score"] = [{"step": 0, "value": best["score"]}]
    return best, history
