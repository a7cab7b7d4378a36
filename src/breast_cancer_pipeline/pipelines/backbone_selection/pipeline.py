"""Backbone selection: one namespaced pipeline per candidate, then selection and head search."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from breast_cancer_pipeline.context import run_parameters

from .nodes import (
    extract_features,
    plot_comparison,
    search_head,
    select_backbone,
    train_head_on_features,
)


def candidate_pipeline() -> Pipeline:
    """The per-candidate template: extract features once, then train and score the head."""
    return Pipeline(
        [
            Node(
                func=extract_features,
                inputs=[
                    "model_input",
                    "augmentation_spec",
                    "params:candidate",
                    "params:backbone_selection",
                ],
                outputs="backbone_features",
                name="extract_features",
            ),
            Node(
                func=train_head_on_features,
                inputs=["backbone_features", "params:candidate", "params:backbone_selection"],
                outputs="candidate_result",
                name="train_head",
            ),
        ]
    )


def configured_candidates() -> list[str]:
    """Candidate names from ``backbone_selection.candidates`` in the run's parameters.

    The parameters of the session that builds the pipelines (its ``--env`` and ``--params``):
    see :mod:`breast_cancer_pipeline.context`. A candidate set to null is dropped.
    """
    from .parameters import active_candidates  # noqa: PLC0415

    return list(active_candidates(run_parameters()["backbone_selection"]["candidates"]))


def create_pipeline(**kwargs) -> Pipeline:
    """One namespaced copy of :func:`candidate_pipeline` per candidate, then the selection."""
    candidates = configured_candidates()
    per_candidate = [
        Pipeline(
            candidate_pipeline(),
            namespace=name,
            inputs={"model_input", "augmentation_spec"},
            outputs={"candidate_result": f"candidate_result_{name}"},
            parameters={
                "params:candidate": f"params:backbone_selection.candidates.{name}",
                "params:backbone_selection": "params:backbone_selection",
            },
        )
        for name in candidates
    ]
    selection = Pipeline(
        [
            Node(
                func=select_backbone,
                inputs=[
                    "params:backbone_selection",
                    *(f"candidate_result_{name}" for name in candidates),
                ],
                outputs=["selected_backbone", "backbone_comparison", "selection_mlflow_metrics"],
                name="select_backbone",
            ),
            Node(
                func=plot_comparison,
                inputs=["backbone_comparison", "params:backbone_selection"],
                outputs="backbone_comparison_chart",
                name="plot_backbone_comparison",
            ),
            Node(
                func=search_head,
                inputs={
                    "selected": "selected_backbone",
                    "params": "params:backbone_selection",
                    **{name: f"{name}.backbone_features" for name in candidates},
                },
                outputs=["best_head", "head_search_mlflow_metrics"],
                name="search_head",
            ),
        ]
    )
    return sum(per_candidate, Pipeline([])) + selection
