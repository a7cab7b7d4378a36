"""Fine-tuning: the selected backbone, head first on the frozen base, then its top unfrozen.

The node resolves the run's plan from the parameters and the head search, trains with
:func:`breast_cancer_pipeline.training.run.train_classifier` (input pipeline, distribution
strategy, mixed precision, callbacks, both phases and their checkpoints live in
:mod:`breast_cancer_pipeline.training`) and describes the trained classifier for reporting
and serving.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from breast_cancer_pipeline.backbones import get_backbone
from breast_cancer_pipeline.geometry import geometry_of_arrays
from breast_cancer_pipeline.tiles import image_classes, spec_of_arrays
from breast_cancer_pipeline.training.plan import FinetunePlan, TrainingRun


def finetune_classifier(
    model_input: dict[str, np.ndarray],
    selected_backbone: dict[str, Any],
    best_head: dict[str, Any],
    augmentation_spec: dict[str, Any],
    checkpoints: Any,
    params: dict,
) -> tuple[Any, dict[str, Any], dict[str, Any], Any]:
    """Train the classifier in two phases, resumably.

    Phase 1 trains the head on the frozen base; phase 2 unfreezes the top of the base and
    trains again at a lower learning rate. Both stop early on validation AUROC, reduce the
    learning rate on its plateaus, and end on the weights of their best epoch. Under mixed
    precision (``finetune.mixed_precision``) the model is built and trained in that policy,
    which is reset afterwards, and the classifier returned is a float32 copy with the trained
    weights. Every epoch is checkpointed, so that a killed run resumes with
    ``finetune.resume: true``.

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
    from breast_cancer_pipeline.training.run import train_classifier  # noqa: PLC0415

    plan = FinetunePlan.from_params(params, best_head)
    model, run = train_classifier(
        model_input, selected_backbone, augmentation_spec, checkpoints, plan
    )
    metadata = _metadata(model_input, selected_backbone, run)
    return model, metadata, run.record.histories, model


def _metadata(
    model_input: dict[str, np.ndarray], selected_backbone: dict[str, Any], run: TrainingRun
) -> dict[str, Any]:
    """What reporting and serving need to know about the trained classifier.

    No timings: identical runs must write identical bytes, or DVC reruns reporting (the
    node's seconds are in MLflow, ``node.finetune.finetune_classifier.seconds``). A network
    trained on tiles takes the tile (``image_size`` is the tile's side) and its metadata
    carries ``tiles``, the tiling that serving repeats.
    """
    shape = model_input["x_train"].shape
    spec = spec_of_arrays(model_input)
    tiles = {} if spec is None else {"tiles": spec.config()}
    return {
        "backbone": get_backbone(selected_backbone["backbone"]).name,
        "weights": selected_backbone["weights"],
        # The image-level classes (a tile network's internal background class left out).
        "class_names": image_classes(list(np.asarray(model_input["class_names"])), spec),
        **geometry_of_arrays(model_input).config(),
        **tiles,
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
