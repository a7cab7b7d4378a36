"""Fine-tuning: the selected backbone, head first on the frozen base, then its top unfrozen."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from breast_cancer_pipeline.backbones import get_backbone
from breast_cancer_pipeline.pipelines.backbone_selection.nodes import class_weights

logger = logging.getLogger(__name__)


def finetune_classifier(
    model_input: dict[str, np.ndarray],
    selected_backbone: dict[str, Any],
    augmentation_spec: dict[str, Any],
    params: dict,
) -> tuple[Any, dict[str, Any], dict[str, Any], dict[str, Any], Any]:
    """Train the classifier in two phases.

    Phase 1 trains the head on the frozen base. Phase 2 makes the base trainable from
    ``unfreeze.from_layer`` (or its top ``unfreeze.fraction``), keeps BatchNorm in inference
    mode for pretrained weights, recompiles at a lower learning rate and trains again. Both
    phases stop early on validation AUROC and keep the best weights.

    Args:
        model_input: Arrays from the augmentation pipeline.
        selected_backbone: The record written by backbone selection.
        augmentation_spec: The augmentation spec (layers inside the model).
        params: The ``finetune`` parameters.

    Returns:
        ``(classifier, metadata, history, mlflow_history, classifier for MLflow)``.
    """
    import keras  # noqa: PLC0415

    from breast_cancer_pipeline.modeling import build_classifier, set_seed, unfreeze  # noqa: PLC0415

    spec = get_backbone(selected_backbone["backbone"], "selected_backbone.backbone")
    weights = selected_backbone.get("weights")
    set_seed(params["seed"], params.get("deterministic", False))
    x_train, y_train = np.asarray(model_input["x_train"]), np.asarray(model_input["y_train"])
    x_val, y_val = np.asarray(model_input["x_val"]), np.asarray(model_input["y_val"])
    class_names = [str(c) for c in model_input["class_names"]]
    n_classes = len(class_names)
    head = {**selected_backbone.get("head", {}), **(params.get("head") or {})}
    model = build_classifier(
        spec.name,
        n_classes,
        x_train.shape[1],
        x_train.shape[3],
        weights,
        head,
        augmentation_spec,
        seed=params["seed"],
    )
    weighting = class_weights(y_train, n_classes) if params["class_weight"] == "auto" else None
    train = (x_train, keras.utils.to_categorical(y_train, n_classes))
    val = (x_val, keras.utils.to_categorical(y_val, n_classes))

    history: dict[str, Any] = {}
    epoch_offset = 0
    started = time.perf_counter()
    for phase in ("phase1", "phase2"):
        settings = params[phase]
        if settings["epochs"] <= 0:
            continue
        if phase == "phase2":
            unfreeze_settings = settings["unfreeze"]
            n_trainable = unfreeze(
                model,
                from_layer=unfreeze_settings.get("from_layer"),
                fraction=unfreeze_settings.get("fraction"),
                keep_batchnorm_frozen=weights is not None,
            )
            logger.info("Phase 2: %d backbone layers trainable", n_trainable)
        _compile(model, settings["learning_rate"], n_classes)
        fit = model.fit(
            *train,
            validation_data=val,
            epochs=settings["epochs"],
            batch_size=params["batch_size"],
            class_weight=weighting,
            callbacks=[
                keras.callbacks.EarlyStopping(
                    monitor="val_auc",
                    mode="max",
                    patience=params["early_stopping_patience"],
                    restore_best_weights=True,
                )
            ],
            verbose=2,
        )
        history[phase] = {k: [float(v) for v in vs] for k, vs in fit.history.items()}
        history[phase]["epoch"] = [epoch_offset + e for e in fit.epoch]
        epoch_offset += len(fit.epoch)

    metadata = {
        "backbone": spec.name,
        "weights": weights,
        "class_names": class_names,
        "image_size": int(x_train.shape[1]),
        "channels": int(x_train.shape[3]),
        "color_mode": "rgb" if x_train.shape[3] == 3 else "grayscale",
        "train_seconds": round(time.perf_counter() - started, 3),
        "epochs": epoch_offset,
        "seed": params["seed"],
    }
    # The two phases are logged as one continuous history per metric.
    merged: dict[str, list[dict[str, float]]] = {}
    for h in history.values():
        for key in h:
            if key != "epoch":
                merged.setdefault(f"finetune.{key}", []).extend(
                    {"step": s, "value": v} for s, v in zip(h["epoch"], h[key], strict=True)
                )
    mlflow_history = merged
    return model, metadata, history, mlflow_history, model


def _compile(model: Any, learning_rate: float, n_classes: int) -> None:
    import keras  # noqa: PLC0415

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="categorical_crossentropy",
        metrics=[
            keras.metrics.CategoricalAccuracy(name="accuracy"),
            keras.metrics.AUC(name="auc", multi_label=n_classes > 2, num_labels=n_classes),
        ],
    )
