"""Fine-tuning: the selected backbone, head first on the frozen base, then its top unfrozen.

Training reads the memory-mapped model input through ``tf.data`` (shuffle, batch, prefetch),
weights or oversamples the classes, runs under the configured ``tf.distribute`` strategy,
logs and publishes every epoch, and checkpoints after every epoch into the catalog's
checkpoint folder so that a killed run resumes with ``finetune.resume: true``:

- :class:`FinetunePlan`: everything the run does, resolved from the parameters and the head
  search (learning rates, batch size, head, epochs per phase, class weighting...).
- :func:`train_head` (phase 1) and :func:`train_unfrozen` (phase 2), one function per phase.
- :func:`build_callbacks`: early stopping, learning-rate reduction, the record of what Keras
  does not back up, Keras's ``BackupAndRestore``, and the progress of each epoch.

Every checkpoint file is read, written and deleted by the checkpoint handle
(:class:`~breast_cancer_pipeline.datasets.training_checkpoints.CheckpointDirectory`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from breast_cancer_pipeline.backbones import get_backbone
from breast_cancer_pipeline.progress import publish_metrics

logger = logging.getLogger(__name__)

#: Monitored by early stopping, learning-rate reduction and the best checkpoint.
MONITOR = "val_auc"
#: The head settings taken from the head search (``best_head.json``) unless ``finetune.head``
#: overrides them.
HEAD_KEYS = ("dropout", "dense_units")
#: Prefix of the metrics published every epoch (``finetune.val_auc``...).
METRICS_PREFIX = "finetune"


@dataclass(frozen=True)
class PhasePlan:
    """One training phase: how long, how fast, and (phase 2) how much of the base trains."""

    name: str
    epochs: int
    learning_rate: float
    from_layer: int | None
    fraction: float | None


@dataclass(frozen=True)
class FinetunePlan:
    """What a finetune run does, resolved from ``finetune`` and ``best_head.json``."""

    seed: int
    deterministic: bool
    strategy: str
    #: ``finetune.mixed_precision`` as set (``auto`` is resolved when training starts).
    mixed_precision: str
    jit_compile: str | bool
    resume: bool
    #: Images per batch and per replica.
    batch_size: int
    head: dict[str, Any]
    class_weight: Any
    oversample: bool
    early_stopping_patience: int
    reduce_lr: dict[str, float]
    phase1: PhasePlan
    phase2: PhasePlan

    @classmethod
    def from_params(cls, params: dict[str, Any], best_head: dict[str, Any]) -> FinetunePlan:
        """The plan of the ``finetune`` parameters; nulls are filled from the head search.

        Raises:
            ValueError: A null parameter whose value ``best_head.json`` does not hold.
        """
        phase1, phase2 = params["phase1"], params["phase2"]
        batch_size = params["batch_size"]
        if batch_size is None:
            batch_size = int(_from_best_head(best_head, "batch_size", "finetune.batch_size"))
        learning_rate = phase1["learning_rate"]
        if learning_rate is None:
            learning_rate = _from_best_head(
                best_head, "learning_rate", "finetune.phase1.learning_rate"
            )
        head = {
            key: params["head"][key]
            if key in params["head"]
            else _from_best_head(best_head, key, f"finetune.head.{key}")
            for key in HEAD_KEYS
        }
        return cls(
            seed=params["seed"],
            deterministic=params["deterministic"],
            strategy=params["strategy"],
            mixed_precision=params["mixed_precision"],
            jit_compile=params["jit_compile"],
            resume=params["resume"],
            batch_size=batch_size,
            head=head,
            class_weight=params["class_weight"],
            oversample=params["oversample"],
            early_stopping_patience=params["early_stopping_patience"],
            reduce_lr=dict(params["reduce_lr"]),
            phase1=PhasePlan("phase1", phase1["epochs"], learning_rate, None, None),
            phase2=PhasePlan(
                "phase2",
                phase2["epochs"],
                phase2["learning_rate"],
                phase2["unfreeze"]["from_layer"],
                phase2["unfreeze"]["fraction"],
            ),
        )


def _from_best_head(best_head: dict[str, Any], key: str, parameter: str) -> Any:
    if key not in best_head:
        raise ValueError(
            f"{parameter} is not set and best_head.json has no {key!r}: set {parameter} "
            "or rerun backbone_selection"
        )
    return best_head[key]


@dataclass
class _Run:
    """What the phases of one run share."""

    plan: FinetunePlan
    strategy: Any
    #: The Keras dtype policy the model is built and trained under.
    policy: str
    #: This worker's checkpoint handle.
    checkpoints: Any
    record: Any  # training.RunRecord
    n_classes: int
    train_data: Any
    steps: int
    val_data: Any
    class_weight: dict[int, float] | None
    #: Publish the epochs' metrics (the chief only, under several workers).
    publish: bool


def finetune_classifier(
    model_input: dict[str, np.ndarray],
    selected_backbone: dict[str, Any],
    best_head: dict[str, Any],
    augmentation_spec: dict[str, Any],
    checkpoints: Any,
    params: dict,
) -> tuple[Any, dict[str, Any], dict[str, Any], Any]:
    """Train the classifier in two phases, resumably.

    Phase 1 (:func:`train_head`) trains the head on the frozen base; phase 2
    (:func:`train_unfrozen`) unfreezes the top of the base and trains again at a lower
    learning rate. Both stop early on validation AUROC, reduce the learning rate on its
    plateaus, and end on the weights of their best epoch. Under mixed precision
    (``finetune.mixed_precision``) the model is built and trained in that policy, which is
    reset afterwards, and the classifier returned is a float32 copy with the trained weights.

    Args:
        model_input: Arrays from the augmentation pipeline (memory-mapped).
        selected_backbone: The record written by backbone selection.
        best_head: The head configuration found by the head search (dropout, dense units,
            learning rate, batch size); ``finetune.head`` overrides it, and a null
            ``phase1.learning_rate`` or ``batch_size`` is taken from it.
        augmentation_spec: The augmentation spec (layers inside the model).
        checkpoints: Handle on the catalog's checkpoint folder
            (:class:`~breast_cancer_pipeline.datasets.training_checkpoints.CheckpointDirectory`).
        params: The ``finetune`` parameters (checked by their schema before the run).

    Returns:
        ``(classifier, metadata, history, classifier for MLflow)``; the history has one
        entry per phase, its ``epoch`` list numbering the epochs of both phases in turn.

    Raises:
        ValueError: A null parameter that the head search does not fill, an unusable
            ``class_weight``, or ``resume: true`` with a checkpoint of other settings or data.
    """
    from breast_cancer_pipeline import training  # noqa: PLC0415
    from breast_cancer_pipeline.modeling import set_seed  # noqa: PLC0415

    plan = FinetunePlan.from_params(params, best_head)
    # The strategy first: a multi-worker cluster must be configured before any TensorFlow op.
    strategy = training.make_strategy(plan.strategy)
    set_seed(plan.seed, plan.deterministic)
    run = _start_run(model_input, selected_backbone, augmentation_spec, plan, strategy, checkpoints)
    keep_batchnorm_frozen = selected_backbone["weights"] is not None
    with training.dtype_policy(run.policy):
        model = _build_model(model_input, selected_backbone, augmentation_spec, run)
        train_head(model, run)
        train_unfrozen(model, run, keep_batchnorm_frozen)
    if run.policy != "float32":
        model = _float32_copy(model, model_input, selected_backbone, augmentation_spec, run)
    run.checkpoints.discard()  # the model is complete; a rerun starts afresh
    metadata = _metadata(model_input, selected_backbone, run)
    return model, metadata, run.record.histories, model


def _start_run(
    model_input: dict[str, np.ndarray],
    selected_backbone: dict[str, Any],
    augmentation_spec: dict[str, Any],
    plan: FinetunePlan,
    strategy: Any,
    checkpoints: Any,
) -> _Run:
    """Input pipelines, class weights, this worker's checkpoints and the record to resume."""
    from breast_cancer_pipeline import training  # noqa: PLC0415

    x_train, y_train = model_input["x_train"], np.asarray(model_input["y_train"])
    class_names = [str(c) for c in model_input["class_names"]]
    # What a checkpoint must have been made with to be resumed (every setting but resume).
    run_fingerprint = training.fingerprint(
        {k: v for k, v in dataclasses.asdict(plan).items() if k != "resume"},
        selected_backbone,
        augmentation_spec,
        class_names,
        y_train,
        np.asarray(x_train[:: max(1, len(x_train) // 8)]),
    )
    chief = training.is_chief(strategy)
    if not chief:
        checkpoints = checkpoints.sibling(f"worker_{strategy.cluster_resolver.task_id}")
    record = _resume(checkpoints, run_fingerprint, plan.resume)
    if chief:
        _publish_restored(record)
    train_data, steps, val_data = _input_pipelines(model_input, plan, strategy)
    return _Run(
        plan=plan,
        strategy=strategy,
        policy=training.mixed_precision_policy(plan.mixed_precision),
        checkpoints=checkpoints,
        record=record,
        n_classes=len(class_names),
        train_data=train_data,
        steps=steps,
        val_data=val_data,
        class_weight=training.resolve_class_weights(
            plan.class_weight, y_train, class_names, plan.oversample
        ),
        publish=chief,
    )


def _input_pipelines(
    model_input: dict[str, np.ndarray], plan: FinetunePlan, strategy: Any
) -> tuple[Any, int, Any]:
    """``(training batches, steps per epoch, validation batches)``, global batch size."""
    from breast_cancer_pipeline.training import make_dataset  # noqa: PLC0415

    n_classes = len(model_input["class_names"])
    global_batch = plan.batch_size * strategy.num_replicas_in_sync
    # Training batches are shuffled (and oversampled, if asked); validation keeps its order.
    (train_data, steps), (val_data, _) = (
        make_dataset(
            model_input[f"x_{split}"],
            model_input[f"y_{split}"],
            n_classes,
            global_batch,
            training=split == "train",
            seed=plan.seed,
            oversample=plan.oversample,
        )
        for split in ("train", "val")
    )
    return train_data, steps, val_data


def _build_model(
    model_input: dict[str, np.ndarray],
    selected_backbone: dict[str, Any],
    augmentation_spec: dict[str, Any],
    run: _Run,
    restore: bool = True,
) -> Any:
    """The classifier, with the weights of the last completed phase when resuming."""
    from breast_cancer_pipeline.modeling import build_classifier  # noqa: PLC0415

    spec = get_backbone(selected_backbone["backbone"], "selected_backbone.backbone")
    shape = model_input["x_train"].shape
    with run.strategy.scope():
        model = build_classifier(
            spec.name,
            run.n_classes,
            shape[1],
            shape[3],
            selected_backbone["weights"],
            run.plan.head,
            augmentation_spec,
            seed=run.plan.seed,
        )
    if restore and run.record.completed:
        run.checkpoints.restore_phase_end(model, run.record.completed[-1])
        logger.info("Resuming after %s", run.record.completed[-1])
    return model


def _float32_copy(
    model: Any,
    model_input: dict[str, np.ndarray],
    selected_backbone: dict[str, Any],
    augmentation_spec: dict[str, Any],
    run: _Run,
) -> Any:
    """The trained mixed-precision ``model`` rebuilt in float32, trainable layers and all.

    Compiled as its last phase left it. Mixed precision keeps every variable in float32, so
    the copy holds exactly the trained weights; it computes in float32 wherever it is loaded
    (a CPU serving it, reporting).
    """
    from breast_cancer_pipeline import training  # noqa: PLC0415
    from breast_cancer_pipeline.modeling import unfreeze  # noqa: PLC0415

    phase = run.plan.phase2
    with training.dtype_policy("float32"):
        copy = _build_model(model_input, selected_backbone, augmentation_spec, run, restore=False)
        with run.strategy.scope():
            if phase.epochs:
                unfreeze(
                    copy,
                    from_layer=phase.from_layer,
                    fraction=phase.fraction,
                    keep_batchnorm_frozen=selected_backbone["weights"] is not None,
                )
            copy.set_weights(model.get_weights())
            last = phase if phase.epochs else run.plan.phase1
            compile_classifier(copy, last.learning_rate, run.n_classes, run.plan.jit_compile)
    return copy


def _resume(checkpoints: Any, run_fingerprint: str, resume: bool) -> Any:
    """The record to continue from (``resume: true`` and a matching checkpoint), else a new one.

    Raises:
        ValueError: ``resume`` is true but the checkpoint was made by other settings or data.
    """
    from breast_cancer_pipeline.training import RunRecord  # noqa: PLC0415

    if not resume:
        checkpoints.discard()
        return RunRecord(run_fingerprint)
    for path in checkpoints.discard_partial_writes():
        logger.info("Deleted or repaired %s, a checkpoint write cut short by the kill", path)
    state = checkpoints.read_state()
    if state is None:
        logger.info("finetune.resume is true but %s holds no checkpoint: starting", checkpoints)
        return RunRecord(run_fingerprint)
    if state.get("fingerprint") != run_fingerprint:
        raise ValueError(
            f"finetune.resume is true but the checkpoint in {checkpoints} was made with other "
            "parameters, backbone or data. Set finetune.resume: false to start over (the "
            "checkpoint is then deleted)"
        )
    record = RunRecord.from_state(state)
    if record.phase is not None:
        # The record may be one epoch ahead of Keras's backup (killed between the two).
        del record.epochs[checkpoints.backed_up_epochs(record.phase) :]
    return record


def _publish_restored(record: Any) -> None:
    """Publish the epochs a resumed run restores, so its MLflow run has the whole curves."""
    epochs = [
        ({k: v[i] for k, v in history.items() if k != "epoch"}, step)
        for history in record.histories.values()
        for i, step in enumerate(history["epoch"])
    ]
    epochs += [
        (epoch["logs"], record.steps_done + i)
        for i, epoch in enumerate(record.epochs_of(record.phase))
    ]
    for logs, step in epochs:
        publish_metrics(
            {f"{METRICS_PREFIX}.{k}": v for k, v in logs.items() if math.isfinite(v)}, step=step
        )


def train_head(model: Any, run: _Run) -> None:
    """Phase 1: the head on the frozen base (the factory builds the base frozen)."""
    phase = run.plan.phase1
    if phase.epochs == 0:
        return
    with run.strategy.scope():
        compile_classifier(model, phase.learning_rate, run.n_classes, run.plan.jit_compile)
    _fit_phase(model, phase, run)


def train_unfrozen(model: Any, run: _Run, keep_batchnorm_frozen: bool) -> None:
    """Phase 2: the base trainable from ``from_layer`` (or its top ``fraction``), recompiled.

    Args:
        model: The classifier after phase 1.
        run: The run's shared state.
        keep_batchnorm_frozen: Keep BatchNorm layers in inference mode (pretrained weights).
    """
    from breast_cancer_pipeline.modeling import unfreeze  # noqa: PLC0415

    phase = run.plan.phase2
    if phase.epochs == 0:
        return
    with run.strategy.scope():
        n_trainable = unfreeze(
            model,
            from_layer=phase.from_layer,
            fraction=phase.fraction,
            keep_batchnorm_frozen=keep_batchnorm_frozen,
        )
        logger.info("Phase 2: %d backbone layers trainable", n_trainable)
        compile_classifier(model, phase.learning_rate, run.n_classes, run.plan.jit_compile)
    _fit_phase(model, phase, run)


def _fit_phase(model: Any, phase: PhasePlan, run: _Run) -> None:
    """Train one phase (or finish the one being resumed), then keep its best epoch."""
    if phase.name in run.record.completed:
        return
    recorded = run.record.epochs_of(phase.name)
    stopped = bool(recorded) and recorded[-1]["stopped"]
    if stopped:
        logger.info("%s had stopped early after epoch %d", phase.name, len(recorded))
    model.fit(
        run.train_data,
        steps_per_epoch=run.steps,
        validation_data=run.val_data,
        # Stopped early before the kill: fit only restores the backup, it trains no epoch.
        epochs=len(recorded) if stopped else phase.epochs,
        class_weight=run.class_weight,
        shuffle=False,  # the dataset shuffles, seeded
        callbacks=build_callbacks(run.plan, phase, run.checkpoints, run.record, run.publish),
        verbose=0,
    )
    run.checkpoints.restore_best(model)
    run.record.complete(phase.name)
    run.checkpoints.finish_phase(model, phase.name, run.record.to_state())


def build_callbacks(
    plan: FinetunePlan, phase: PhasePlan, checkpoints: Any, record: Any, publish: bool
) -> list[Any]:
    """The callbacks of one phase, in the order they must run at the end of each epoch.

    Early stopping and learning-rate reduction on validation AUROC update their counters;
    :class:`~breast_cancer_pipeline.training.PhaseRecorder` records the epoch (history, those
    counters, the best weights) in ``record`` and the checkpoint state; Keras's
    ``BackupAndRestore`` then backs up the weights, the optimizer and the epoch (keeping the
    previous backup, and leaving the folder for the checkpoint handle to delete when the
    phase is recorded complete); last, the epoch's progress line and published metrics.

    Args:
        plan: The run's plan.
        phase: The phase these callbacks train.
        checkpoints: This worker's checkpoint handle.
        record: The run's :class:`~breast_cancer_pipeline.training.RunRecord`.
        publish: Publish the epochs' metrics (``finetune.<metric>``, step = global epoch).
    """
    import keras  # noqa: PLC0415

    from breast_cancer_pipeline import training  # noqa: PLC0415

    stopping = keras.callbacks.EarlyStopping(
        monitor=MONITOR,
        mode="max",
        patience=plan.early_stopping_patience,
        restore_best_weights=False,  # the best checkpoint is restored instead
    )
    plateau = keras.callbacks.ReduceLROnPlateau(monitor=MONITOR, mode="max", **plan.reduce_lr)
    return [
        stopping,
        plateau,
        training.PhaseRecorder(checkpoints, record, phase.name, [stopping, plateau], MONITOR),
        training.PhaseBackup(
            checkpoints.backup_dir(phase.name), double_checkpoint=True, delete_checkpoint=False
        ),
        training.EpochProgress(
            phase.name, phase.epochs, record.steps_done, METRICS_PREFIX if publish else None
        ),
    ]


def compile_classifier(
    model: Any, learning_rate: float, n_classes: int, jit_compile: str | bool
) -> None:
    """Compile with Adam, categorical cross-entropy, accuracy and AUROC (macro OvR if > 2).

    Under a ``mixed_float16`` model Keras wraps the optimizer in a loss-scale optimizer.

    Args:
        model: The classifier.
        learning_rate: Adam's learning rate.
        n_classes: Number of classes (the AUROC's form).
        jit_compile: XLA compilation of the train step (``finetune.jit_compile``).
    """
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
        jit_compile=jit_compile,
    )


def _metadata(
    model_input: dict[str, np.ndarray], selected_backbone: dict[str, Any], run: _Run
) -> dict[str, Any]:
    """What reporting and serving need to know about the trained classifier.

    No timings: identical runs must write identical bytes, or DVC reruns reporting (the
    node's seconds are in MLflow, ``node.finetune.finetune_classifier.seconds``).
    """
    shape = model_input["x_train"].shape
    return {
        "backbone": get_backbone(selected_backbone["backbone"]).name,
        "weights": selected_backbone["weights"],
        "class_names": [str(c) for c in model_input["class_names"]],
        "image_size": int(shape[1]),
        "channels": int(shape[3]),
        "color_mode": "rgb" if shape[3] == 3 else "grayscale",
        "head": run.plan.head,
        "batch_size": run.plan.batch_size,
        "epochs": run.record.steps_done,
        "seed": run.plan.seed,
        "strategy": type(run.strategy).__name__,
        "mixed_precision": run.policy,
        "jit_compile": run.plan.jit_compile,
        "replicas": int(run.strategy.num_replicas_in_sync),
    }
