"""Project pipelines."""

from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

from breast_cancer_pipeline.pipelines.inference.pipeline import (
    SERVING_INPUT,
    create_serving_pipeline,
)
from breast_cancer_pipeline.serving import with_served_model

#: The stages that ``kedro run`` (``__default__``) chains, in order. ``demo_data`` writes the
#: synthetic dataset and ``inference`` scores new images; neither is part of a training run.
TRAINING_STAGES = (
    "ingestion",
    "validation",
    "augmentation",
    "backbone_selection",
    "finetune",
    "reporting",
)


def as_stage(name: str, pipeline: Pipeline) -> Pipeline:
    """Put every node of ``pipeline`` in the namespace ``name``, keeping its dataset names.

    kedro-viz draws each namespace as one collapsible group, and nodes are named
    ``<stage>.<node>`` (``kedro run --nodes=finetune.finetune_classifier``, or a whole stage
    with ``--namespaces=finetune``). Datasets and parameters keep their names: they are the
    catalog's and ``conf``'s, shared between stages. Nodes already in a namespace (one per
    backbone candidate) nest under the stage: ``backbone_selection.<candidate>.<node>``.

    Args:
        name: The stage, i.e. the pipeline's name in the registry.
        pipeline: The stage's pipeline.

    Returns:
        The same nodes, namespaced.
    """
    return Pipeline(pipeline, namespace=name, prefix_datasets_with_namespace=False)


def register_pipelines() -> dict[str, Pipeline]:
    """Register the project's pipelines.

    Returns:
        A mapping from pipeline names to ``Pipeline`` objects.
    """
    pipelines = {
        name: as_stage(name, pipeline)
        for name, pipeline in find_pipelines(raise_errors=True).items()
    }
    # `kedro run --pipelines=X` loads only X; the default run loads them all.
    pipelines["__default__"] = sum(
        (pipelines[name] for name in TRAINING_STAGES if name in pipelines), Pipeline([])
    )
    # A run that ends with reporting logs and registers the served model (kedro-mlflow).
    for name in ("reporting", "__default__"):
        if "reporting" in pipelines:
            pipelines[name] = with_served_model(
                pipelines[name], create_serving_pipeline(), SERVING_INPUT
            )
    return pipelines
