"""``backbone_selection.*``: cached features versus the notebooks' way, where it means something.

Candidates that start from random weights all score about the same (the demo's did: AUROC
0.50-0.57), so a comparison of rankings says nothing. Here every candidate starts from
weights the benchmark pretrains briefly (``PRETRAIN_EPOCHS`` epochs, batch-norm momentum 0.9 so
the statistics settle) on a disjoint, easier synthetic set (another seed, brighter masses)
and saves as a local weights file: ``backbone_selection.candidates.<name>.weights: <file>``,
the project's local-weights path (:func:`~breast_cancer_pipeline.backbones.check_weights`,
``build_backbone``). Then, on 2,000 training and 400 validation images (48 px, fainter
masses), the same candidates, head and epochs both ways, one seed:

- notebooks: a classifier with the frozen base inside (augmentation on), ``fit`` for the
  epochs with validation scored after 1, 2, 5, 10 and 20 epochs (scoring not timed), so the
  base recomputes every image every epoch;
- cached: the pipeline's nodes: :func:`extract_features` once, :func:`train_head_on_features`
  on them for each number of epochs (seconds include the extraction).

Figures: ``cached_speedup`` at 20 epochs (goal ≥ 10) and ``cached_speedup_<e>_epochs``;
``same_winner`` by the pipeline's own rule (:func:`select_backbone`: validation AUROC within
the tolerance, then the fastest; goal true); ``rank_correlation``, Kendall's τ between the
candidates' validation AUROCs the two ways (goal ≥ 0.6). Three rounds, each cached then
notebooks; each figure is its round's, the headline their median. ``BENCH_QUICK=1``: two
candidates, a few images at 32 px, one round.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import harness
from benchmarks._images import AUGMENTATION, images
from tests.params import base_params

QUICK = harness.quick()
CANDIDATES = (
    ("small_cnn", "mobilenet_v3_small")
    if QUICK
    else ("small_cnn", "mobilenet_v3_small", "mobilenet_v3_large", "mobilenet_v2")
)
EPOCHS = (1, 2) if QUICK else (1, 2, 5, 10, 20)
SIZE = 32 if QUICK else 48
#: Images: pretraining (disjoint: other seeds), training and validation of the selection.
N_PRETRAIN, N_TRAIN, N_VAL = (24, 24, 16) if QUICK else (1200, 2000, 400)
PRETRAIN_EPOCHS = 1 if QUICK else 3
#: Mass brightness over the background: the pretraining set is easier than the task.
PRETRAIN_SIGNAL, TASK_SIGNAL = 50.0, 25.0
ROUNDS = 1 if QUICK else harness.REPEATS
GOALS: dict[str, harness.Goal] = {
    "backbone_selection.cached_speedup": (">=", 10),
    "backbone_selection.same_winner": ("==", True),
    "backbone_selection.rank_correlation": (">=", 0.6),
}


def _pretrain(workdir: Path) -> tuple[dict[str, str], dict[str, float]]:
    """Train each candidate briefly on a disjoint set; its backbone's weights file, seconds."""
    import keras

    from breast_cancer_pipeline.modeling import build_classifier, set_seed

    x, y = images(N_PRETRAIN, SIZE, seed=100, signal=PRETRAIN_SIGNAL)
    files, seconds = {}, {}
    for name in CANDIDATES:
        started = time.perf_counter()
        set_seed(0)
        model = build_classifier(name, 3, SIZE, 1, None, {"dropout": 0.2}, AUGMENTATION)
        base = model.get_layer("backbone")
        base.trainable = True
        for layer in base.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = 0.9  # moving statistics settle within the few steps
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
        model.fit(x, y, batch_size=32, epochs=PRETRAIN_EPOCHS, verbose=0)
        path = workdir / f"{name}_pretrained.weights.h5"
        base.save_weights(path)
        files[name], seconds[name] = str(path), time.perf_counter() - started
    return files, seconds


def _params(weights: dict[str, str]) -> dict[str, Any]:
    """The demo's ``backbone_selection`` parameters, one seed, the pretrained candidates."""
    params = base_params("backbone_selection", env="demo", repeats=1, seed=0)
    params["candidates"] = {
        name: {"backbone": name, "weights": weights[name]} for name in CANDIDATES
    }
    return params


def _task(workdir: Path) -> dict[str, Any]:
    """The selection's train and validation arrays, saved and loaded memory-mapped."""
    x_train, y_train = images(N_TRAIN, SIZE, seed=0, signal=TASK_SIGNAL)
    x_val, y_val = images(N_VAL, SIZE, seed=1, signal=TASK_SIGNAL)
    arrays = {"x_train": x_train, "y_train": y_train, "x_val": x_val, "y_val": y_val}
    for key, value in arrays.items():
        np.save(workdir / f"{key}.npy", value)
    return {key: np.load(workdir / f"{key}.npy", mmap_mode="r") for key in arrays}


def _winner(params: dict[str, Any], records: dict[str, dict[str, Any]]) -> str:
    """The candidate the pipeline's own rule (:func:`select_backbone`) picks."""
    from breast_cancer_pipeline.pipelines.backbone_selection.nodes import select_backbone

    selected, _, _ = select_backbone(params, *(records[name] for name in CANDIDATES))
    return selected["candidate"]


def _cached(data: dict[str, Any], params: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """The pipeline's way: candidate records after each epoch count (seconds include extraction)."""
    from breast_cancer_pipeline.pipelines.backbone_selection.nodes import (
        extract_features,
        train_head_on_features,
    )

    records: dict[int, dict[str, Any]] = {e: {} for e in EPOCHS}
    for name in CANDIDATES:
        candidate = params["candidates"][name]
        started = time.perf_counter()
        features = extract_features(data, AUGMENTATION, candidate, params)
        extract_seconds = time.perf_counter() - started
        for epochs in EPOCHS:
            started = time.perf_counter()
            record = train_head_on_features(features, candidate, {**params, "epochs": epochs})
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
        weights = params["candidates"][name]["weights"]
        model = build_classifier(name, 3, SIZE, 1, weights, head, AUGMENTATION)
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
                f"rank_correlation{tag}": _kendall_tau(cached[epochs], notebook[epochs]),
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


def _kendall_tau(cached: dict[str, Any], notebook: dict[str, Any]) -> float:
    """Kendall's τ between the candidates' validation AUROCs the cached and notebook ways."""
    from scipy.stats import kendalltau

    a = [cached[name]["val_auroc_mean"] for name in CANDIDATES]
    b = [notebook[name]["val_auroc_mean"] for name in CANDIDATES]
    tau = kendalltau(a, b).statistic
    return float(tau) if np.isfinite(tau) else 0.0  # all tied one way: no agreement shown


def _loaded_as_saved(params: dict[str, Any]) -> None:
    """The extractor built from ``weights: <file>`` holds the pretrained weights, not new ones."""
    import keras

    from breast_cancer_pipeline.backbones import get_backbone
    from breast_cancer_pipeline.modeling import build_backbone, build_feature_extractor

    for name, candidate in params["candidates"].items():
        saved = build_backbone(get_backbone(name), SIZE, 1 if name == "small_cnn" else 3, None)
        saved.load_weights(candidate["weights"])
        keras.utils.set_random_seed(12345)
        loaded = build_feature_extractor(name, SIZE, 1, candidate["weights"]).get_layer("backbone")
        for a, b in zip(saved.get_weights(), loaded.get_weights(), strict=True):
            assert np.array_equal(a, b), f"{name}: the local weights file was not loaded"


def _warm_up(data: dict[str, Any]) -> None:
    """TensorFlow's one-off start (thread pools, first traces), so round 1 does not pay it."""
    from breast_cancer_pipeline.modeling import build_classifier

    model = build_classifier("small_cnn", 3, data["x_train"].shape[1], 1, None, {}, AUGMENTATION)
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    x = np.asarray(data["x_train"][:8])
    model.fit(x, np.eye(3, dtype=np.float32)[np.arange(8) % 3], epochs=1, verbose=0)
    model.predict(x, verbose=0)


def run(workdir: Path) -> dict[str, Any]:
    weights, pretrain_seconds = _pretrain(workdir)
    params = _params(weights)
    _loaded_as_saved(params)
    data = _task(workdir)
    _warm_up(data)
    rounds = harness.interleave({"round": lambda: _round(data, params)}, ROUNDS)["round"]
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
    return {
        **figures,
        "backbone_selection.epochs": max(EPOCHS),
        "backbone_selection.epochs_measured": list(EPOCHS),
        "backbone_selection.candidates": list(CANDIDATES),
        "backbone_selection.images": f"{N_TRAIN} train / {N_VAL} val, {SIZE} px grayscale",
        "backbone_selection.pretraining": (
            f"{N_PRETRAIN} disjoint images (seed 100, signal {PRETRAIN_SIGNAL:g} vs "
            f"{TASK_SIGNAL:g}), {PRETRAIN_EPOCHS} epochs, saved as local .weights.h5 files"
        ),
        "backbone_selection.pretrain_seconds": {
            k: round(v, 1) for k, v in pretrain_seconds.items()
        },
    }
