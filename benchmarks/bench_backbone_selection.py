"""``backbone_selection.cached_speedup``: cached features versus the notebooks' way.

The same candidates (the demo's: small CNN, MobileNetV3Small, EfficientNetB0, random
weights, 128 px) and the same epochs, one seed each: the demo's ``backbone_selection.epochs``
(20; the headline figure) and the notebooks' ten (``*_10_epochs``), both from one run:

- notebooks: a classifier with the frozen base inside (augmentation on), ``fit`` for the
  epochs with validation every epoch, so the base recomputes every image every epoch;
- cached: the pipeline's nodes: :func:`extract_features` once, :func:`train_head` on them.

Both pick the winner by validation AUROC with the same tolerance rule
(``backbone_selection.same_winner``). Goal: speed-up ≥ 10.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._images import AUGMENTATION, model_input

CANDIDATES = ("small_cnn", "mobilenet_v3_small", "efficientnet_b0")
EPOCHS = (10, 20)
HEAD = {"dropout": 0.2, "dense_units": None, "learning_rate": 0.001, "batch_size": 32}
TOLERANCE = 0.01


def _winner(scores: dict[str, float], cost: dict[str, float]) -> str:
    best = max(scores.values())
    near = [c for c in scores if scores[c] >= best - TOLERANCE]
    return min(near, key=lambda c: cost[c])


def run(workdir: Path) -> dict[str, Any]:
    import keras

    from breast_cancer_pipeline.modeling import build_classifier, set_seed
    from breast_cancer_pipeline.pipelines.backbone_selection.nodes import (
        auroc,
        class_weights,
        extract_features,
        train_head,
    )

    data = model_input(workdir)
    x_val = np.asarray(data["x_val"])
    y_train, y_val = np.asarray(data["y_train"]), np.asarray(data["y_val"])
    params = {
        "seed": 0,
        "extraction_batch_size": 32,
        "augmented_passes": 0,
        "repeats": 1,
        "head": HEAD,
    }
    # cached[epochs][name] = (seconds, val AUROC)
    cached: dict[int, dict[str, tuple[float, float]]] = {e: {} for e in EPOCHS}
    cost = {}
    for name in CANDIDATES:
        candidate = {"backbone": name, "weights": None}
        started = time.perf_counter()
        features = extract_features(data, AUGMENTATION, candidate, params)
        extract_seconds = time.perf_counter() - started
        cost[name] = float(features["ms_per_image"])
        for epochs in EPOCHS:
            started = time.perf_counter()
            record = train_head(features, candidate, {**params, "epochs": epochs})
            seconds = extract_seconds + time.perf_counter() - started
            cached[epochs][name] = (seconds, record["val_auroc_mean"])

    class AtEpochs(keras.callbacks.Callback):
        """Time and validation AUROC after each epoch count of EPOCHS (scoring not timed)."""

        def __init__(self, started: float) -> None:
            super().__init__()
            self.started, self.scoring, self.seen = started, 0.0, {}

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if epoch + 1 in EPOCHS:
                elapsed = time.perf_counter() - self.started - self.scoring
                t = time.perf_counter()
                proba = self.model.predict(x_val, batch_size=32, verbose=0)
                self.seen[epoch + 1] = (elapsed, auroc(y_val, proba))
                self.scoring += time.perf_counter() - t

    notebook: dict[int, dict[str, tuple[float, float]]] = {e: {} for e in EPOCHS}
    eye = np.eye(3, dtype=np.float32)
    for name in CANDIDATES:
        started = time.perf_counter()
        set_seed(0)
        model = build_classifier(name, 3, data["x_train"].shape[1], 1, None, HEAD, AUGMENTATION)
        model.compile(
            optimizer=keras.optimizers.Adam(HEAD["learning_rate"]),
            loss="categorical_crossentropy",
        )
        at = AtEpochs(started)
        model.fit(
            np.asarray(data["x_train"]),
            eye[y_train],
            batch_size=HEAD["batch_size"],
            epochs=max(EPOCHS),
            validation_data=(x_val, eye[y_val]),
            class_weight=class_weights(y_train, 3),
            callbacks=[at],
            verbose=0,
        )
        for epochs in EPOCHS:
            notebook[epochs][name] = at.seen[epochs]

    figures: dict[str, Any] = {}
    for epochs in EPOCHS:
        tag = "" if epochs == max(EPOCHS) else f"_{epochs}_epochs"
        total_cached = sum(s for s, _ in cached[epochs].values())
        total_notebook = sum(s for s, _ in notebook[epochs].values())
        cached_winner = _winner({n: a for n, (_, a) in cached[epochs].items()}, cost)
        notebook_winner = _winner({n: a for n, (_, a) in notebook[epochs].items()}, cost)
        figures.update(
            {
                f"backbone_selection.cached_seconds{tag}": round(total_cached, 2),
                f"backbone_selection.notebook_seconds{tag}": round(total_notebook, 2),
                f"backbone_selection.cached_speedup{tag}": round(total_notebook / total_cached, 2),
                f"backbone_selection.cached_winner{tag}": cached_winner,
                f"backbone_selection.notebook_winner{tag}": notebook_winner,
                f"backbone_selection.same_winner{tag}": cached_winner == notebook_winner,
            }
        )
        for name in CANDIDATES:
            prefix = f"backbone_selection.{name}"
            figures[f"{prefix}.cached_val_auroc{tag}"] = round(cached[epochs][name][1], 4)
            figures[f"{prefix}.notebook_val_auroc{tag}"] = round(notebook[epochs][name][1], 4)
            figures[f"{prefix}.cached_seconds{tag}"] = round(cached[epochs][name][0], 2)
            figures[f"{prefix}.notebook_seconds{tag}"] = round(notebook[epochs][name][0], 2)
    figures["backbone_selection.epochs"] = max(EPOCHS)
    return figures
