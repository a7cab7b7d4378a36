"""Finetune pipeline: train the selected backbone end to end, and once per fold (k-fold CV).

With ``evaluation.folds`` = k ≥ 2 the pipeline also assigns the development images to k
patient-grouped, stratified folds and runs one namespaced copy of :func:`fold_pipeline` per
fold (``fold_1`` ... ``fold_k``, grouped under ``finetune`` in kedro-viz): the same finetune
node, trained on the other folds, then the held-out fold predicted. The fold count comes from
the run's parameters, like the backbone candidates (:mod:`breast_cancer_pipeline.context`).
"""

from kedro.pipeline import Node, Pipeline

from breast_cancer_pipeline.context import run_parameters
from breast_cancer_pipeline.evaluation.folds import fold_name
from breast_cancer_pipeline.tiles import uses_attention

from .attention import fit_tile_attention
from .cross_validation import (
    assign_cv_folds,
    collect_out_of_fold,
    fold_model_input,
    predict_fold,
)
from .nodes import finetune_classifier


def finetune_pipeline() -> Pipeline:
    """The fine-tuning of one classifier on ``model_input``'s train and val splits."""
    return Pipeline(
        [
            Node(
                func=finetune_classifier,
                inputs=[
                    "model_input",
                    "selected_backbone",
                    "best_head",
                    "augmentation_spec",
                    "finetune_checkpoints",
                    "params:finetune",
                ],
                outputs=[
                    "classifier",
                    "classifier_metadata",
                    # Per-epoch metrics reach MLflow as each epoch ends (published live).
                    "finetune_history",
                    "classifier_mlflow",
                ],
                name="finetune_classifier",
            )
        ]
    )


def fold_pipeline() -> Pipeline:
    """The per-fold template: the fold's arrays, :func:`finetune_pipeline`, its predictions."""
    arrays = Node(
        func=fold_model_input,
        inputs=["development_input", "fold_roles"],
        outputs="model_input",
        name="fold_model_input",
    )
    predict = Node(
        func=predict_fold,
        inputs=["classifier", "model_input", "params:reporting"],
        outputs=["holdout_predictions", "test_predictions"],
        name="predict_fold",
    )
    return Pipeline([arrays]) + finetune_pipeline() + Pipeline([predict])


def attention_pipeline() -> Pipeline:
    """The attention head over each image's tiles, fitted on the trained tile classifier."""
    return Pipeline(
        [
            Node(
                func=fit_tile_attention,
                inputs=[
                    "classifier",
                    "model_input",
                    "params:augmentation",
                    "params:finetune",
                    "params:reporting",
                ],
                outputs="attention_head",
                name="fit_tile_attention",
            )
        ]
    )


def configured_folds() -> int:
    """``evaluation.folds`` in the run's parameters (see :mod:`breast_cancer_pipeline.context`)."""
    return int(run_parameters()["evaluation"]["folds"])


def cross_validation_pipeline(n_folds: int) -> Pipeline:
    """Fold assignment, one namespaced :func:`fold_pipeline` per fold, the out-of-fold table."""
    names = [fold_name(i) for i in range(1, n_folds + 1)]
    assign = Node(
        func=assign_cv_folds,
        inputs=["validated_manifest", "params:evaluation"],
        outputs=["cv_folds", *(f"{name}.fold_roles" for name in names)],
        name="assign_cv_folds",
    )
    per_fold = [
        Pipeline(
            fold_pipeline(),
            namespace=name,
            inputs={
                "development_input": "model_input",
                **{shared: shared for shared in ("selected_backbone", "best_head")},
                "augmentation_spec": "augmentation_spec",
            },
            parameters={"params:finetune", "params:reporting"},
        )
        for name in names
    ]
    collect = Node(
        func=collect_out_of_fold,
        inputs=["cv_folds", *(f"{name}.holdout_predictions" for name in names)],
        outputs="oof_predictions",
        name="collect_out_of_fold",
    )
    return Pipeline([assign]) + sum(per_fold, Pipeline([])) + Pipeline([collect])


def create_pipeline(**kwargs) -> Pipeline:
    """The finetune pipeline: the classifier, its attention head, the folds.

    The attention head over each image's tiles when ``augmentation.tiles.aggregation`` is
    ``attention``; the folds when ``evaluation.folds`` ≥ 2.
    """
    n_folds = configured_folds()
    pipeline = finetune_pipeline()
    if uses_attention(run_parameters().get("augmentation") or {}):
        pipeline += attention_pipeline()
    if n_folds < 2:
        return pipeline
    return pipeline + cross_validation_pipeline(n_folds)
