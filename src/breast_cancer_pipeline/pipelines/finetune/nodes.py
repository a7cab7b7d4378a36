"""Fine-tuning: the selected backbone, head first on the frozen base, then its top unfrozen.

Training reads the memory-mapped model input through ``tf.data`` (shuffle, batch, prefetch),
weights or oversamples the classes, runs under the configured ``tf.distribute`` strategy,
logs every epoch, and checkpoints after every epoch into the catalog's checkpoint folder so
that a killed run resumes with ``finetune.resume: true``.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np

from breast_cancer_pipeline.backbones import get_backbone

logger = logging.getLogger(__name__)

PHASES = ("phase1", "phase2")
#: Monitored by early stopping, learning-rate reduction and the best checkpoint.
MONITOR = "val_auc"


def check_params(params: dict) -> None:
    """Validate the ``finetune`` parameters before any training starts.

    Raises:
        ValueError: A parameter is missing or out of range; the message names it.
    """
    from breast_cancer_pipeline.training import STRATEGIES  # noqa: PLC0415

    if params.get("strategy", "auto") not in STRATEGIES:
        raise ValueError(
            f"finetune.strategy must be one of {list(STRATEGIES)}, got {params['strategy']!r}"
        )
    batch = params.get("batch_size")
    if batch is not None and (not isinstance(batch, int) or batch < 1):
        raise ValueError(f"finetune.batch_size must be a positive integer or null, got {batch!r}")
    for phase in PHASES:
        epochs = params[phase].get("epochs")
        if not isinstance(epochs, int) or epochs < 0:
            raise ValueError(f"finetune.{phase}.epochs must be an integer ≥ 0, got {epochs!r}")
    unfreeze_settings = params["phase2"].get("unfreeze", {})
    if params["phase2"]["epochs"] and (unfreeze_settings.get("from_layer") is None) == (
        unfreeze_settings.get("fraction") is None
    ):
        raise ValueError(
            "finetune.phase2.unfreeze: set exactly one of from_layer (e.g. 300) or fraction "
            "(e.g. 0.3), the other to null"
        )
    plateau = params["reduce_lr"]
    if not 0.0 < plateau["factor"] < 1.0:
        raise ValueError(f"finetune.reduce_lr.factor must be in (0, 1), got {plateau['factor']}")


def finetune_classifier(
    model_input: dict[str, np.ndarray],
    selected_backbone: dict[str, Any],
    best_head: dict[str, Any],
    augmentation_spec: dict[str, Any],
    checkpoints: Any,
    params: dict,
) -> tuple[Any, dict[str, Any], dict[str, Any], dict[str, Any], Any]:
    """Train the classifier in two phases, resumably.

    Phase 1 trains the head on the frozen base. Phase 2 makes the base trainable from
    ``unfreeze.from_layer`` (or its top ``unfreeze.fraction``), keeps BatchNorm in inference
    mode for pretrained weights, recompiles at a lower learning rate and trains again. Both
    phases stop early on validation AUROC, reduce the learning rate on its plateaus, and end
    on the weights of their best epoch (checkpointed after every epoch).

    Args:
        model_input: Arrays from the augmentation pipeline (memory-mapped).
        selected_backbone: The record written by backbone selection.
        best_head: The head configuration found by the head search (dropout, dense units,
            learning rate, batch size); ``finetune.head`` overrides it, and a null
            ``phase1.learning_rate`` or ``batch_size`` is taken from it.
        augmentation_spec: The augmentation spec (layers inside the model).
        checkpoints: Handle on the catalog's checkpoint folder
            (:class:`~breast_cancer_pipeline.datasets.training_checkpoints.CheckpointDirectory`).
        params: The ``finetune`` parameters.

    Returns:
        ``(classifier, metadata, history, mlflow_history, classifier for MLflow)``.

    Raises:
        ValueError: Invalid parameters, or ``resume: true`` with a checkpoint made by other
            settings or data.
    """
    check_params(params)
    from breast_cancer_pipeline import training  # noqa: PLC0415
    from breast_cancer_pipeline.modeling import build_classifier, set_seed, unfreeze  # noqa: PLC0415

    # The strategy first: a multi-worker cluster must be configured before any TensorFlow op.
    strategy = training.make_strategy(params.get("strategy", "auto"))
    set_seed(params["seed"], params.get("deterministic", False))
    spec = get_backbone(selected_backbone["backbone"], "selected_backbone.backbone")
    weights = selected_backbone.get("weights")
    x_train, y_train = model_input["x_train"], np.asarray(model_input["y_train"])
    x_val, y_val = model_input["x_val"], np.asarray(model_input["y_val"])
    class_names = [str(c) for c in model_input["class_names"]]
    n_classes = len(class_names)
    head = {
        key: best_head[key] for key in ("dropout", "dense_units") if key in (best_head or {})
    } or dict(selected_backbone.get("head", {}))
    head = {**head, **(params.get("head") or {})}
    batch_size = params.get("batch_size") or int(best_head.get("batch_size", 32))
    global_batch = batch_size * strategy.num_replicas_in_sync
    oversample = bool(params.get("oversample", False))
    train_data, steps = training.make_dataset(
        x_train,
        y_train,
        n_classes,
        global_batch,
        training=True,
        seed=params["seed"],
        oversample=oversample,
    )
    val_data, _ = training.make_dataset(
        x_val, y_val, n_classes, global_batch, training=False, seed=params["seed"]
    )
    weighting = training.resolve_class_weights(
        params.get("class_weight", "auto"), y_train, class_names, oversample
    )
    learning_rates = {
        "phase1": params["phase1"].get("learning_rate") or best_head.get("learning_rate"),
        "phase2": params["phase2"]["learning_rate"],
    }
    if learning_rates["phase1"] is None:
        raise ValueError(
            "finetune.phase1.learning_rate is null and best_head.json has no learning_rate: "
            "set finetune.phase1.learning_rate (e.g. 0.001) or rerun backbone_selection"
        )

    store = checkpoints
    if not training.is_chief(strategy):
        store = checkpoints.sibling(f"worker_{strategy.cluster_resolver.task_id}")
    run_fingerprint = training.fingerprint(
        {k: v for k, v in params.items() if k != "resume"},
        selected_backbone,
        head,
        augmentation_spec,
        class_names,
        y_train,
        np.asarray(x_train[:: max(1, len(x_train) // 8)]),
    )
    state = _resume_state(store, run_fingerprint, params.get("resume", False))

    with strategy.scope():
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
    completed: list[str] = list(state["completed"]) if state else []
    history: dict[str, Any] = dict(state["histories"]) if state else {}
    resume_phase = state["phase"] if state and state["phase"] not in completed else None
    if completed and resume_phase is None:
        model.load_weights(store.weights_file(f"{completed[-1]}_end"))
        logger.info("Resuming after %s from %s", completed[-1], store.path)

    epoch_offset = sum(len(h["epoch"]) for h in history.values())
    started = time.perf_counter()
    for phase in PHASES:
        settings = params[phase]
        if settings["epochs"] <= 0:
            continue
        with strategy.scope():
            if phase == "phase2":
                unfreeze_settings = settings["unfreeze"]
                n_trainable = unfreeze(
                    model,
                    from_layer=unfreeze_settings.get("from_layer"),
                    fraction=unfreeze_settings.get("fraction"),
                    keep_batchnorm_frozen=weights is not None,
                )
                logger.info("Phase 2: %d backbone layers trainable", n_trainable)
            _compile(model, learning_rates[phase], n_classes)
        if phase in completed:
            continue
        resume_from = state if phase == resume_phase else None
        initial_epoch = 0
        if resume_from:
            model.optimizer.build(model.trainable_variables)
            model.load_weights(store.weights_file("last"))
            initial_epoch = int(resume_from["epochs_done"])
            logger.info("Resuming %s at epoch %d from %s", phase, initial_epoch + 1, store.path)
        callbacks = _callbacks(params, phase, settings["epochs"])
        checkpoint = training.ResumableCheckpoint(
            store,
            phase,
            {"fingerprint": run_fingerprint, "completed": completed, "histories": history},
            monitor=MONITOR,
            resume_from=resume_from,
            stateful=callbacks,
        )
        if not (resume_from and resume_from.get("stopped")):
            model.fit(
                train_data,
                steps_per_epoch=steps,
                validation_data=val_data,
                epochs=settings["epochs"],
                initial_epoch=initial_epoch,
                class_weight=weighting,
                shuffle=False,  # the dataset shuffles, seeded
                callbacks=[*callbacks, checkpoint, training.EpochLogger(phase, settings["epochs"])],
                verbose=0,
            )
        if store.weights_file("best").is_file():
            model.load_weights(store.weights_file("best"))
        phase_history = dict(checkpoint.history)
        n_epochs = len(next(iter(phase_history.values()), []))
        phase_history["epoch"] = list(range(epoch_offset, epoch_offset + n_epochs))
        epoch_offset += n_epochs
        history[phase] = phase_history
        completed.append(phase)
        store.save_weights(model, f"{phase}_end")
        store.write_state(
            {
                "fingerprint": run_fingerprint,
                "phase": phase,
                "completed": completed,
                "histories": history,
            }
        )
        for name in ("best", "last"):
            store.weights_file(name).unlink(missing_ok=True)
    # The model is complete; a rerun starts afresh.
    store.clear()

    metadata = {
        "backbone": spec.name,
        "weights": weights,
        "class_names": class_names,
        "image_size": int(x_train.shape[1]),
        "channels": int(x_train.shape[3]),
        "color_mode": "rgb" if x_train.shape[3] == 3 else "grayscale",
        "head": head,
        "batch_size": batch_size,
        "train_seconds": round(time.perf_counter() - started, 3),
        "epochs": epoch_offset,
        "seed": params["seed"],
        "strategy": type(strategy).__name__,
        "replicas": int(strategy.num_replicas_in_sync),
    }
    return model, metadata, history, _mlflow_history(history), model


def _resume_state(store: Any, run_fingerprint: str, resume: bool) -> dict[str, Any] | None:
    if not resume:
        store.clear()
        return None
    for path in store.discard_partial_writes():
        logger.info("Deleted %s, a checkpoint write cut short by the kill", path)
    state = store.read_state()
    if state is None:
        logger.info("finetune.resume is true but %s holds no checkpoint: starting", store.path)
        return None
    if state.get("fingerprint") != run_fingerprint:
        raise ValueError(
            f"finetune.resume is true but the checkpoint in '{store.path}' was made with other "
            "parameters, backbone or data. Set finetune.resume: false to start over (the "
            "checkpoint is then deleted)"
        )
    return state


def _callbacks(params: dict, phase: str, epochs: int) -> list[Any]:
    import keras  # noqa: PLC0415

    plateau = params["reduce_lr"]
    return [
        keras.callbacks.EarlyStopping(
            monitor=MONITOR,
            mode="max",
            patience=params["early_stopping_patience"],
            restore_best_weights=False,  # the best checkpoint is restored instead
        ),
        keras.callbacks.ReduceLROnPlateau(
            monitor=MONITOR,
            mode="max",
            factor=plateau["factor"],
            patience=plateau["patience"],
            min_lr=plateau["min_lr"],
        ),
    ]


def _mlflow_history(history: dict[str, Any]) -> dict[str, list[dict[str, float]]]:
    """The phases as one continuous history per metric, in kedro-mlflow's format."""
    merged: dict[str, list[dict[str, float]]] = {}
    for h in history.values():
        for key in h:
            if key != "epoch":
                merged.setdefault(f"finetune.{key}", []).extend(
                    {"step": s, "value": v}
                    for s, v in zip(h["epoch"], h[key], strict=True)
                    if math.isfinite(v)
                )
    return merged


def _compile(model: Any, learning_rate: float, n_classes: int) -> None:
    import keras  # noqa: PLC0415

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="categorical_crossentropy",
        metrics=[
            keras.metrics.CategoricalAccuracy(name="accuracy"),
            # Multi-class: the mean of per-class one-vs-rest AUROCs (sklearn's macro OvR).
            keras.metrics.AUC(name="auc", multi_label=True, num_labels=n_classes)
            if n_classes > 2
            else keras.metrics.AUC(name="auc"),
        ],
    )
