"""Backbone selection on cached features.

With the base frozen, a backbone's pooled features are a pure function of the image: each
candidate's features are computed once, then a small head is trained on them for several
seeds. The comparison costs little more than one forward pass per backbone, instead of the
notebooks' frozen base recomputed every epoch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from breast_cancer_pipeline.metrics import auroc, class_weights
from breast_cancer_pipeline.plotting import figure_png, pyplot
from breast_cancer_pipeline.progress import (
    Progress,
    TrialReport,
    format_seconds,
    publish_metrics,
    publish_trial,
)

from .parameters import active_candidates
from .study import completed_trials, open_study, setup_digest, worker_name

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
        augmentation_spec: The augmentation spec (its stain reference normalises the images
            inside the extractor; its layers are used when ``augmented_passes`` > 0).
        candidate: This candidate's ``backbone`` and ``weights`` (checked before the run).
        params: The ``backbone_selection`` parameters.

    Returns:
        ``features_train``, ``features_val``, ``y_train``, ``y_val``, and the measured
        ``extract_seconds``, ``ms_per_image`` and ``n_params`` (0-d arrays).
    """
    from breast_cancer_pipeline.modeling import build_feature_extractor, set_seed  # noqa: PLC0415

    name, weights, passes = candidate["backbone"], candidate["weights"], params["augmented_passes"]
    x_train, x_val = model_input["x_train"], model_input["x_val"]
    y_train, y_val = np.asarray(model_input["y_train"]), np.asarray(model_input["y_val"])
    n_images = len(x_val) + len(x_train) * (passes + 1)
    logger.info(
        "%s (weights %s): extracting features of %d images (%d augmented passes)",
        name, weights, n_images, passes,
    )  # fmt: skip
    set_seed(params["seed"])
    size, channels = tuple(x_train.shape[1:3]), x_train.shape[3]
    extractor = build_feature_extractor(name, size, channels, weights, augmentation_spec)
    run = _feature_runner(extractor, int(max(y_train.max(), y_val.max())) + 1, params)
    started = time.perf_counter()
    features_val = run(x_val, y_val)
    features_train = [run(x_train, y_train)]
    ms_per_image = 1000.0 * (time.perf_counter() - started) / (len(x_train) + len(x_val))
    features_train += _augmented_features(x_train, augmentation_spec, extractor, name, params)
    seconds = time.perf_counter() - started
    logger.info(
        "%s: %d features per image of %d images in %s (%.1f ms/image)",
        name, features_val.shape[1], n_images, format_seconds(seconds), ms_per_image,
    )  # fmt: skip
    return {
        "features_train": np.concatenate(features_train).astype(np.float32),
        "features_val": features_val.astype(np.float32),
        "y_train": np.tile(y_train, passes + 1),
        "y_val": y_val,
        "extract_seconds": np.asarray(seconds),
        "ms_per_image": np.asarray(ms_per_image),
        "n_params": np.asarray(extractor.count_params()),
    }


def _feature_runner(
    extractor: Any, n_classes: int, params: dict
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """``run(x, y)``: the extractor's features of ``x``, streamed in batches."""
    from breast_cancer_pipeline.training.data import make_dataset  # noqa: PLC0415

    def run(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        # Streamed from the (memory-mapped) arrays; the unknown batch dimension of tf.data
        # lets one traced function serve every call, partial last batches included.
        data, _ = make_dataset(
            x, y, n_classes, params["extraction_batch_size"], training=False, seed=params["seed"]
        )
        return extractor.predict(data, verbose=0)

    return run


def _augmented_features(
    x_train: np.ndarray,
    augmentation_spec: dict[str, Any],
    extractor: Any,
    name: str,
    params: dict,
) -> list[np.ndarray]:
    """Features of ``augmented_passes`` augmented views of the training images, one per pass.

    Each batch is augmented and run through the backbone at once, so progress (count, rate,
    ETA) covers both.
    """
    from breast_cancer_pipeline.modeling import build_augmenter  # noqa: PLC0415

    passes, batch = params["augmented_passes"], params["extraction_batch_size"]
    if not passes:
        return []
    progress = Progress(passes * len(x_train), f"{name}: augmented passes", logger, "images")
    features = []
    for k in range(passes):
        augmenter = build_augmenter(augmentation_spec, seed=params["seed"] + 1 + k)
        chunks = []
        for i in range(0, len(x_train), batch):
            views = augmenter(np.asarray(x_train[i : i + batch], np.float32), training=True)
            views = np.clip(np.asarray(views), 0, 255).astype(np.uint8)
            chunks.append(np.asarray(extractor.predict_on_batch(views)))
            progress.advance(len(views))
        features.append(np.concatenate(chunks))
    progress.finish()
    return features


def standardise(train: np.ndarray, val: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scale each feature to zero mean and unit variance on the training set.

    A randomly initialised backbone's pooled features can be tiny (MobileNetV3Small's average
    about 1e-11 at 128 px): a head on them outputs one constant, AUROC 0.5, although the
    features vary from image to image; scaled, the same features rank (demo data: 0.62).
    A feature that is constant on the training set is only centred.

    Returns:
        ``(train, val)`` scaled by the training set's statistics, ``float32``.
    """
    train64 = np.asarray(train, dtype=np.float64)
    mean, std = train64.mean(axis=0), train64.std(axis=0)
    std = np.where(std > 0, std, 1.0)

    def scale(x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, np.float64) - mean) / std).astype(np.float32)

    return scale(train64), scale(val)


def fit_head(
    features: dict[str, np.ndarray],
    head: dict[str, Any],
    epochs: int,
    seed: int,
    predict_batch_size: int,
    steps_per_execution: int,
) -> dict[str, float]:
    """Train one head on cached features and score it on the validation features.

    Args:
        features: The output of :func:`extract_features`.
        head: ``dropout``, ``dense_units``, ``learning_rate``, ``batch_size``.
        epochs: Training epochs.
        seed: Seed of the initialisation and shuffling.
        predict_batch_size: Feature vectors per batch when scoring the validation features.
        steps_per_execution: Training steps per compiled call (Keras): the same updates in
            the same order, with Python's per-step overhead paid once per group. A head's
            step on a batch of feature vectors takes well under a millisecond, so that
            overhead was a third of its training time.

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
        steps_per_execution=steps_per_execution,
    )
    # Features of any scale (random initialisation: ~1e-11) train the head alike.
    x_train, x_val = standardise(features["features_train"], features["features_val"])
    model.fit(
        x_train,
        y_train,
        epochs=epochs,
        batch_size=int(head["batch_size"]),
        class_weight=class_weights(y_train, n_classes),
        verbose=0,
    )
    proba = model.predict(x_val, batch_size=predict_batch_size, verbose=0)
    return {
        "val_auroc": auroc(y_val, proba),
        "val_accuracy": float(np.mean(y_val == proba.argmax(axis=1))),
    }


def train_head_on_features(
    features: dict[str, np.ndarray], candidate: dict, params: dict
) -> dict[str, Any]:
    """Train a head on the candidate's cached features, once per seed, and score it.

    The backbone never runs here (:func:`extract_features` ran it once): each seed's head is
    :func:`fit_head` on the feature vectors. Fine-tuning's head phase, which trains the
    head of the whole classifier on images, is
    :func:`breast_cancer_pipeline.training.phases.fit_head_phase`.

    Returns:
        The candidate's record: metrics as mean and std over ``repeats`` seeds, timings,
        the backbone's parameter count and the settings used.
    """
    scores: dict[str, list[float]] = {m: [] for m in METRICS}
    started = time.perf_counter()
    for repeat in range(params["repeats"]):
        result = fit_head(
            features,
            params["head"],
            params["epochs"],
            params["seed"] + repeat,
            params["predict_batch_size"],
            params["steps_per_execution"],
        )
        for m in METRICS:
            scores[m].append(result[m])
    record = {
        "backbone": candidate["backbone"],
        "weights": candidate["weights"],
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
    ``ms_per_image``; the others follow them by higher ``metric``.

    Returns:
        ``(selected, comparison, mlflow_metrics)``.

    Raises:
        ValueError: The candidates that ran differ from ``backbone_selection.candidates``.
    """
    names = list(active_candidates(params["candidates"]))
    if len(records) != len(names):
        raise ValueError(
            f"backbone_selection ran {len(records)} candidates but the parameters list "
            f"{len(names)} ({', '.join(names)}): the pipeline was built from other parameters "
            "than the run's. Build it in the session that runs it (`kedro run --env=<env>` "
            "builds and runs the DAG from the same configuration)"
        )
    metric = f"{params['metric']}_mean"
    table = pd.DataFrame([{"candidate": n, **r} for n, r in zip(names, records, strict=True)])
    best = table[metric].max()
    table["within_tolerance"] = table[metric] >= best - params["tolerance"]
    near = table["within_tolerance"]
    ranked = pd.concat(
        [
            table[near].sort_values(["ms_per_image", metric], ascending=[True, False]),
            table[~near].sort_values([metric, "ms_per_image"], ascending=[False, True]),
        ]
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


def plot_comparison(comparison: pd.DataFrame, params: dict) -> bytes:
    """A chart of every candidate: the metric (mean ± std over seeds) and the inference cost.

    Returns:
        The chart as PNG bytes: bars of the selection metric with error bars (the winner
        highlighted, the tolerance band shaded) beside bars of milliseconds per image.
    """
    plt = pyplot()
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
    return figure_png(fig, params["figure_dpi"])


def search_head(
    selected: dict[str, Any], params: dict, **candidate_features: dict[str, np.ndarray]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Optuna (TPE) search of the head on the winner's cached features, kept in a study.

    Searches dropout, learning rate, dense units and batch size, each trial a head trained for
    ``head_search.epochs`` and scored by the selection metric on the validation features,
    until the study holds ``head_search.n_trials`` completed trials. The study is kept in
    ``head_search.storage`` (:mod:`.study`): a killed search resumes with the missing trials,
    several processes can run trials of it at once, and ``optuna-dashboard`` shows it. With
    ``n_trials: 0`` the configured ``head`` is returned.

    Every trial this process runs is logged (value, best so far, settings, ETA) and published
    as it ends: ``head_search.<metric>`` and ``head_search.best_<metric>`` as live metrics
    (:func:`~breast_cancer_pipeline.progress.publish_metrics`, step = trial number), and the
    trial itself (:func:`~breast_cancer_pipeline.progress.publish_trial`), which the project's
    hook logs as a nested MLflow run with the settings as params.

    Args:
        selected: The selected backbone (its ``candidate`` names the features to use).
        params: The ``backbone_selection`` parameters.
        **candidate_features: Every candidate's cached features, keyed by candidate name.

    Returns:
        ``(best_head, mlflow_metrics)``: the best configuration (read by finetune; with the
        study's name and completed trials) and the search's outcome as metric histories
        (``head_search.best_score``, ``head_search.best_trial``).
    """
    search, metric = params["head_search"], params["metric"]
    if search["n_trials"] <= 0:
        default = {**params["head"], "score": selected["score"]}
        return {**default, "source": "backbone_selection.head"}, {}
    study = _complete_study(selected, params, candidate_features[selected["candidate"]])
    best = {
        **study.best_params,
        "score": float(study.best_value),
        "trial": study.best_trial.number,
        "n_trials": completed_trials(study),
        "study": study.study_name,
        "source": "head_search",
    }
    logger.info("Head search: best %s %.4f with %s", metric, best["score"], study.best_params)
    history = {
        "head_search.best_score": [{"step": 0, "value": best["score"]}],
        "head_search.best_trial": [{"step": 0, "value": float(best["trial"])}],
    }
    return best, history


def _complete_study(selected: dict[str, Any], params: dict, features: dict[str, np.ndarray]) -> Any:
    """The head search's study, opened or resumed, once it holds ``n_trials`` completed trials.

    The study is named after its setup (candidate, metric, seed, epochs, space) and the
    features, so a search with other settings never continues this one.
    """
    import optuna  # noqa: PLC0415

    search, metric = params["head_search"], params["metric"]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    setup = {
        "candidate": selected["candidate"],
        "metric": metric,
        "seed": params["seed"],
        "epochs": search["epochs"],
        "space": search["space"],
    }
    name = f"{search['study_name']}-{setup_digest(features, setup)}"
    study = open_study(search, name, params["seed"])
    study.set_user_attr("setup", setup)
    n_trials, done = search["n_trials"], completed_trials(study)
    logger.info(
        "Head search: study %s in %s, %d of %d trials completed",
        name, search["storage"] or "memory", done, n_trials,
    )  # fmt: skip
    if done < n_trials:
        study.optimize(
            _head_objective(features, params),
            n_trials=n_trials - done,
            # Other processes may run trials of the study too: stop at n_trials in all.
            callbacks=[optuna.study.MaxTrialsCallback(n_trials), TrialLogger(metric, n_trials)],
        )
    return study


def _head_objective(features: dict[str, np.ndarray], params: dict) -> Callable[[Any], float]:
    """The Optuna objective: a head drawn from ``head_search.space``, trained and scored."""
    search = params["head_search"]
    space = search["space"]
    worker = worker_name()

    def objective(trial: Any) -> float:
        trial.set_user_attr("worker", worker)
        head = {
            "dropout": trial.suggest_float("dropout", *space["dropout"]),
            "learning_rate": trial.suggest_float(
                "learning_rate", *space["learning_rate"], log=True
            ),
            "dense_units": trial.suggest_categorical("dense_units", list(space["dense_units"])),
            "batch_size": trial.suggest_categorical("batch_size", list(space["batch_size"])),
        }
        fitted = fit_head(
            features,
            head,
            search["epochs"],
            params["seed"],
            params["predict_batch_size"],
            params["steps_per_execution"],
        )
        return fitted[params["metric"]]

    return objective


def _trial_report(study: Any, trial: Any, metric: str) -> TrialReport:
    """What :func:`~breast_cancer_pipeline.progress.publish_trial` sends for ``trial``."""
    started, finished = trial.datetime_start, trial.datetime_complete
    return TrialReport(
        study=study.study_name,
        number=trial.number,
        state=trial.state.name.lower(),
        params=dict(trial.params),
        metrics={} if trial.value is None else {f"head_search.{metric}": float(trial.value)},
        started=started.timestamp() if started else None,
        finished=finished.timestamp() if finished else None,
    )


class TrialLogger:
    """Optuna callback: logs each trial this process finishes and publishes it.

    One line per trial: the study's completed trials out of ``n_trials``, its value, the best
    so far, its settings and the ETA (this process's mean trial time × the trials missing);
    :func:`~breast_cancer_pipeline.progress.publish_metrics` of ``head_search.<metric>`` and
    ``head_search.best_<metric>`` at step = trial number; and
    :func:`~breast_cancer_pipeline.progress.publish_trial` of the trial (settings, score).
    """

    def __init__(
        self, metric: str, n_trials: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """Log the trials of a search of ``n_trials`` scored by ``metric`` (``val_auroc``)."""
        self.metric = metric
        self.n_trials = n_trials
        self._clock = clock
        self._started = clock()
        self._ran = 0

    def __call__(self, study: Any, trial: Any) -> None:
        """Log and publish ``trial`` (Optuna calls this after every trial)."""
        self._ran += 1
        done = completed_trials(study)
        mean = (self._clock() - self._started) / self._ran
        eta = format_seconds(mean * max(self.n_trials - done, 0))
        publish_trial(_trial_report(study, trial, self.metric))
        if trial.value is None:  # failed or pruned (e.g. a NaN score)
            logger.warning(
                "Head search trial #%d: %s (%d/%d completed), ETA %s",
                trial.number, trial.state.name.lower(), done, self.n_trials, eta,
            )  # fmt: skip
            return
        best = study.best_value
        logger.info(
            "Head search trial %d/%d: %s %.4f (best %.4f), %s, ETA %s",
            done, self.n_trials, self.metric, trial.value, best, trial.params, eta,
        )  # fmt: skip
        figures = {
            f"head_search.{self.metric}": float(trial.value),
            f"head_search.best_{self.metric}": float(best),
        }
        publish_metrics(figures, step=trial.number)
