"""``backbone_selection.cached_speedup``: cached features versus the notebooks' way.

The same candidates (the demo's: small CNN, MobileNetV3Small, EfficientNetB0, random
weights, 128 px) and the same epochs, one seed each: the demo's ``backbone_selection.epochs``
(20; the headline figure) and the notebooks' ten (``*_10_epochs``), both from one run:

- notebooks: a classifier with the frozen base inside (augmentation on), ``fit`` for the
  epochs with validation every epoch, so the base recomputes every image every epoch;
- cached: the pipeline's nodes: :func:`extract_features` once, :func:`train_head` on them.

Both pick the winner by the pipeline's own rule (:func:`select_backbone`, validation AUROC
within the tolerance, the fastest): ``backbone_selection.same_winner``. Goal: speed-up ≥ 10.
Three rounds, each cached then notebooks; the speed-up is each round's, the figure its median.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import harness
from benchmarks._images import AUGMENTATION, model_input
from tests.params import base_params

CANDIDATES = ("small_cnn", "mobilenet_v3_small") + (() if harness.quick() else ("efficientnet_b0",))
EPOCHS = (1, 2) if harness.quick() else (10, 20)
GOALS: dict[str, harness.Goal] = {
    "backbone_selection.cached_speedup": (">=", 10),
    "backbone_selection.same_winner": ("==", True),
}


def _params() -> dict[str, Any]:
    """The demo's ``backbone_selection`` parameters, one seed, these candidates."""
    params = base_params("backbone_selection", env="demo", repeats=1, seed=0)
    params["candidates"] = {name: {"backbone": name, "weights": None} for name in CANDIDATES}
    return params


def _winner(params: dict[str, Any], records: dict[str, dict[str, Any]]) -> str:
    """The candidate the pipeline's own rule (:func:`select_backbone`) picks."""
    from breast_cancer_pipeline.pipelines.backbone_selection.nodes import select_backbone

    selected, _, _ = select_backbone(params, *(records[name] for name in CANDIDATES))
    return selected["candidate"]


def _cached(data: dict[str, Any], params: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """The pipeline's way: candidate records after each epoch count (seconds include extraction)."""
    from breast_cancer_pipeline.pipelines.backbone_selection.nodes import (
        extract_features,
        train_head,
    )

    records: dict[int, dict[str, Any]] = {e: {} for e in EPOCHS}
    for name in CANDIDATES:
        candidate = params["candidates"][name]
        started = time.perf_counter()
        features = extract_features(data, AUGMENTATION, candidate, params)
        extract_seconds = time.perf_counter() - started
        for epochs in EPOCHS:
            started = time.perf_counter()
            record = train_head(features, candidate, {**params, "epochs": epochs})
            record["seconds"] = extract_seconds + time.perf_counter() - started
            records[epochs][name] = record
    return records


def _notebook(
    data: dict[str, Any], params: dict[str, Any], cached: dict[int, dict[str, Any]]
) -> dict[int, dict[str, Any]]:
    """The notebooks' way: the frozen base inside the model, run every epoch.

    Each record is the cached one with the notebook's seconds and validation AUROC, so
    :func:`_winner` ranks both ways by the same rule and inference cost.
    """
    import keras

    from breast_cancer_pipeline.metrics import auroc, class_weights
    from breast_cancer_pipeline.modeling import build_classifier, set_seed

    x_val, y_val = np.asarray(data["x_val"]), np.asarray(data["y_val"])
    y_train, head, eye = np.asarray(data["y_train"]), params["head"], np.eye(3, dtype=np.float32)

    class AtEpochs(keras.callbacks.Callback):
        """Time and validation AUROC after each epoch count of EPOCHS (scoring not timed)."""

        def __init__(self, started: float) -> None:
            super().__init__()
            self.started, self.scoring, self.seen = started, 0.0, {}

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if epoch + 1 in EPOCHS:
                elapsed = time.perf_counter() - self.started - self.scoring
                t = time.perf_counter()
                proba = self.model.predict(x_val, batch_size=head["batch_size"], verbose=0)
                self.seen[epoch + 1] = (elapsed, auroc(y_val, proba))
                self.scoring += time.perf_counter() - t

    records: dict[int, dict[str, Any]] = {e: {} for e in EPOCHS}
    for name in CANDIDATES:
        started = time.perf_counter()
        set_seed(params["seed"])
        model = build_classifier(name, 3, data["x_train"].shape[1], 1, None, head, AUGMENTATION)
        model.compile(
            optimizer=keras.optimizers.Adam(head["learning_rate"]), loss="categorical_crossentropy"
        )
        at = AtEpochs(started)
        model.fit(
            np.asarray(data["x_train"]),
            eye[y_train],
            batch_size=head["batch_size"],
            epochs=max(EPOCHS),
            validation_data=(x_val, eye[y_val]),
            class_weight=class_weights(y_train, 3),
            callbacks=[at],
            verbose=0,
        )
        for epochs in EPOCHS:
            seconds, score = at.seen[epochs]
            records[epochs][name] = {
                **cached[epochs][name],
                "seconds": seconds,
                "val_auroc_mean": score,
                "val_auroc_std": 0.0,
            }
    return records


def _round(data: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """Both ways once; the figures of this round (seconds, speed-ups, winners, AUROCs)."""
    cached = _cached(data, params)
    notebook = _notebook(data, params, cached)
    figures: dict[str, Any] = {}
    for epochs in EPOCHS:
        tag = "" if epochs == max(EPOCHS) else f"_{epochs}_epochs"
        total_cached = sum(r["seconds"] for r in cached[epochs].values())
        total_notebook = sum(r["seconds"] for r in notebook[epochs].values())
        cached_winner = _winner(params, cached[epochs])
        notebook_winner = _winner(params, notebook[epochs])
        figures.update(
            {
                f"cached_seconds{tag}": total_cached,
                f"notebook_seconds{tag}": total_notebook,
                f"cached_speedup{tag}": total_notebook / total_cached,
                f"cached_winner{tag}": cached_winner,
                f"notebook_winner{tag}": notebook_winner,
                f"same_winner{tag}": cached_winner == notebook_winner,
            }
        )
        for name in CANDIDATES:
            for way, records in (("cached", cached), ("notebook", notebook)):
                record = records[epochs][name]
                figures[f"{name}.{way}_val_auroc{tag}"] = record["val_auroc_mean"]
                figures[f"{name}.{way}_seconds{tag}"] = record["seconds"]
    return figures


def _warm_up(data: dict[str, Any]) -> None:
    """TensorFlow's one-off start (thread pools, first traces), so round 1 does not pay it."""
    from breast_cancer_pipeline.modeling import build_classifier

    model = build_classifier("small_cnn", 3, data["x_train"].shape[1], 1, None, {}, AUGMENTATION)
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    x = np.asarray(data["x_train"][:8])
    model.fit(x, np.eye(3, dtype=np.float32)[np.arange(8) % 3], epochs=1, verbose=0)
    model.predict(x, verbose=0)


def run(workdir: Path) -> dict[str, Any]:
    data = model_input(workdir)
    params = _params()
    _warm_up(data)
    rounds = harness.interleave({"round": lambda: _round(data, params)})["round"]
    figures: dict[str, Any] = {}
    for key in rounds[0]:
        values = [r[key] for r in rounds]
        if isinstance(values[0], bool):
            figure = harness.agreement(values)
        elif isinstance(values[0], str):
            figure = values  # the winner of each round
        else:
            figure = harness.summary(values, 4 if "auroc" in key else 2)
        figures[f"backbone_selection.{key}"] = figure
    figures["backbone_selection.epochs"] = max(EPOCHS)
    return figures
