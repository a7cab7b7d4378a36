"""One training run of the classifier: strategy, input, both phases, the float32 classifier.

- :func:`train_classifier`: the whole run, in this order: the distribution strategy, the
  seeds, :func:`start_run`, the model built under the run's dtype policy, phase 1 then
  phase 2 (:mod:`.phases`), a float32 copy under mixed precision, the checkpoint deleted.
- :func:`start_run`: the input pipelines, class weights, this worker's checkpoints and the
  record to resume.
- :func:`build_model` and :func:`float32_copy`: the classifier of the run.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import keras
import numpy as np

from breast_cancer_pipeline.backbones import get_backbone
from breast_cancer_pipeline.modeling import build_classifier, set_seed
from breast_cancer_pipeline.training.callbacks import METRICS_PREFIX
from breast_cancer_pipeline.training.checkpoints import fingerprint, resume_record
from breast_cancer_pipeline.training.data import make_dataset, resolve_class_weights
from breast_cancer_pipeline.training.distribution import is_chief, make_strategy
from breast_cancer_pipeline.training.phases import (
    compile_classifier,
    fit_head_phase,
    fit_unfrozen_phase,
    unfreeze,
)
from breast_cancer_pipeline.training.plan import FinetunePlan, TrainingRun
from breast_cancer_pipeline.training.precision import dtype_policy, mixed_precision_policy
from breast_cancer_pipeline.training.progress import publish_restored

logger = logging.getLogger(__name__)


def train_classifier(
    model_input: dict[str, np.ndarray],
    selected_backbone: dict[str, Any],
    augmentation_spec: dict[str, Any],
    checkpoints: Any,
    plan: FinetunePlan,
) -> tuple[keras.Model, TrainingRun]:
    """Train the classifier in two phases, resumably.

    Phase 1 (:func:`~.phases.fit_head_phase`) trains the head on the frozen base; phase 2
    (:func:`~.phases.fit_unfrozen_phase`) unfreezes the top of the base and trains again at a
    lower learning rate. Under mixed precision the model is built and trained in that policy,
    which is reset afterwards, and the classifier returned is a float32 copy with the trained
    weights. A completed run deletes its checkpoint.

    Args:
        model_input: Arrays from the augmentation pipeline (memory-mapped).
        selected_backbone: The record written by backbone selection.
        augmentation_spec: The augmentation spec (layers inside the model).
        checkpoints: Handle on the checkpoint folder
            (:class:`~breast_cancer_pipeline.datasets.training_checkpoints.CheckpointDirectory`).
        plan: What the run does.

    Returns:
        ``(classifier, run)``; ``run.record.histories`` holds one history per phase.

    Raises:
        ValueError: An unusable ``class_weight``, an unknown strategy or policy, or
            ``resume`` with a checkpoint of other settings or data.
    """
    # The strategy first: a multi-worker cluster must be configured before any TensorFlow op.
    strategy = make_strategy(plan.strategy)
    set_seed(plan.seed, plan.deterministic)
    run = start_run(model_input, selected_backbone, augmentation_spec, plan, strategy, checkpoints)
    keep_batchnorm_frozen = selected_backbone["weights"] is not None
    with dtype_policy(run.policy):
        model = build_model(model_input, selected_backbone, augmentation_spec, run)
        fit_head_phase(model, run)
        fit_unfrozen_phase(model, run, keep_batchnorm_frozen)
    if run.policy != "float32":
        model = float32_copy(model, model_input, selected_backbone, augmentation_spec, run)
    run.checkpoints.discard()  # the model is complete; a rerun starts afresh
    return model, run


def start_run(
    model_input: dict[str, np.ndarray],
    selected_backbone: dict[str, Any],
    augmentation_spec: dict[str, Any],
    plan: FinetunePlan,
    strategy: Any,
    checkpoints: Any,
) -> TrainingRun:
    """Input pipelines, class weights, this worker's checkpoints and the record to resume.

    The chief publishes the epochs a resumed record restores; another worker of a cluster
    checkpoints to a sibling folder of its own.
    """
    x_train, y_train = model_input["x_train"], np.asarray(model_input["y_train"])
    class_names = [str(c) for c in model_input["class_names"]]
    # What a checkpoint must have been made with to be resumed (every setting but resume).
    run_fingerprint = fingerprint(
        {k: v for k, v in dataclasses.asdict(plan).items() if k != "resume"},
        selected_backbone,
        augmentation_spec,
        class_names,
        y_train,
        np.asarray(x_train[:: max(1, len(x_train) // 8)]),
    )
    chief = is_chief(strategy)
    if not chief:
        checkpoints = checkpoints.sibling(f"worker_{strategy.cluster_resolver.task_id}")
    record = resume_record(checkpoints, run_fingerprint, plan.resume)
    if chief:
        publish_restored(record, METRICS_PREFIX)
    train_data, steps, val_data = _input_pipelines(model_input, plan, strategy)
    return TrainingRun(
        plan=plan,
        strategy=strategy,
        policy=mixed_precision_policy(plan.mixed_precision),
        checkpoints=checkpoints,
        record=record,
        n_classes=len(class_names),
        train_data=train_data,
        steps=steps,
        val_data=val_data,
        class_weight=resolve_class_weights(
            plan.class_weight, y_train, class_names, plan.oversample
        ),
        publish=chief,
    )


def _input_pipelines(
    model_input: dict[str, np.ndarray], plan: FinetunePlan, strategy: Any
) -> tuple[Any, int, Any]:
    """``(training batches, steps per epoch, validation batches)``, global batch size."""
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


def build_model(
    model_input: dict[str, np.ndarray],
    selected_backbone: dict[str, Any],
    augmentation_spec: dict[str, Any],
    run: TrainingRun,
    restore: bool = True,
) -> keras.Model:
    """The classifier, with the weights of the last completed phase when resuming."""
    spec = get_backbone(selected_backbone["backbone"], "selected_backbone.backbone")
    shape = model_input["x_train"].shape
    with run.strategy.scope():
        model = build_classifier(
            spec.name,
            run.n_classes,
            (shape[1], shape[2]),
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


def float32_copy(
    model: keras.Model,
    model_input: dict[str, np.ndarray],
    selected_backbone: dict[str, Any],
    augmentation_spec: dict[str, Any],
    run: TrainingRun,
) -> keras.Model:
    """The trained mixed-precision ``model`` rebuilt in float32, trainable layers and all.

    Compiled as its last phase left it. Mixed precision keeps every variable in float32, so
    the copy holds exactly the trained weights; it computes in float32 wherever it is loaded
    (a CPU serving it, reporting).
    """
    phase = run.plan.phase2
    with dtype_policy("float32"):
        copy = build_model(model_input, selected_backbone, augmentation_spec, run, restore=False)
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
