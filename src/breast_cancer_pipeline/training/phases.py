"""The two fit phases of a classifier, and what they change in it.

- :func:`fit_head_phase` (phase 1): the head on the frozen base (the model factory builds the
  base frozen).
- :func:`fit_unfrozen_phase` (phase 2): the top of the base made trainable by
  :func:`unfreeze` (BatchNorm kept in inference mode for pretrained weights), recompiled,
  trained again at a lower learning rate.
- :func:`compile_classifier`: the optimizer, loss and metrics; called after every change to
  ``trainable``.

Each phase stops early on validation AUROC, reduces the learning rate on its plateaus, ends
on the weights of its best epoch, and checkpoints after every epoch so that a killed phase
resumes (:mod:`.callbacks`).
"""

from __future__ import annotations

import logging

import keras
from keras import layers

from breast_cancer_pipeline.training.callbacks import build_callbacks
from breast_cancer_pipeline.training.plan import PhasePlan, TrainingRun

logger = logging.getLogger(__name__)


def compile_classifier(
    model: keras.Model, learning_rate: float, n_classes: int, jit_compile: str | bool
) -> None:
    """Compile with Adam, categorical cross-entropy, accuracy and AUROC (macro OvR if > 2).

    Under a ``mixed_float16`` model Keras wraps the optimizer in a loss-scale optimizer.

    Args:
        model: The classifier.
        learning_rate: Adam's learning rate.
        n_classes: Number of classes (the AUROC's form).
        jit_compile: XLA compilation of the train step (``finetune.jit_compile``).
    """
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


def unfreeze(
    model: keras.Model,
    from_layer: int | None = None,
    fraction: float | None = None,
    keep_batchnorm_frozen: bool = True,
) -> int:
    """Make the backbone trainable from a layer on.

    Args:
        model: A model from :func:`~breast_cancer_pipeline.modeling.build_classifier`.
        from_layer: Index of the first backbone layer to train (e.g. 300 for ResNet101V2).
        fraction: Alternatively, the trailing fraction of backbone layers to train.
        keep_batchnorm_frozen: Keep BatchNorm layers frozen (right for pretrained weights,
            whose statistics fine-tuning must not destroy).

    Returns:
        The number of backbone layers made trainable. Recompile the model afterwards.

    Raises:
        ValueError: Neither or both of ``from_layer`` and ``fraction`` are given.
    """
    if (from_layer is None) == (fraction is None):
        raise ValueError("finetune.unfreeze: give exactly one of from_layer or fraction")
    base = model.get_layer("backbone")
    n = len(base.layers)
    start = from_layer if from_layer is not None else round(n * (1.0 - float(fraction)))
    start = min(max(int(start), 0), n)
    base.trainable = True
    trained = 0
    for i, layer in enumerate(base.layers):
        frozen_bn = keep_batchnorm_frozen and isinstance(layer, layers.BatchNormalization)
        layer.trainable = i >= start and not frozen_bn
        trained += int(layer.trainable)
    return trained


def fit_head_phase(model: keras.Model, run: TrainingRun) -> None:
    """Phase 1: the head on the frozen base (the factory builds the base frozen)."""
    phase = run.plan.phase1
    if phase.epochs == 0:
        return
    with run.strategy.scope():
        compile_classifier(model, phase.learning_rate, run.n_classes, run.plan.jit_compile)
    _fit_phase(model, phase, run)


def fit_unfrozen_phase(model: keras.Model, run: TrainingRun, keep_batchnorm_frozen: bool) -> None:
    """Phase 2: the base trainable from ``from_layer`` (or its top ``fraction``), recompiled.

    Args:
        model: The classifier after phase 1.
        run: The run's shared state.
        keep_batchnorm_frozen: Keep BatchNorm layers in inference mode (pretrained weights).
    """
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


def _fit_phase(model: keras.Model, phase: PhasePlan, run: TrainingRun) -> None:
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
