"""Reporting pipeline: test-split predictions, metrics and figures."""

from kedro.pipeline import Node, Pipeline

from .nodes import compute_metrics, plot_confusion_matrix, predict_test_split


def create_pipeline(**kwargs) -> Pipeline:
    """Create the reporting pipeline."""
    return Pipeline(
        [
            Node(
                func=predict_test_split,
                inputs=["classifier", "model_input", "params:reporting"],
                outputs="test_predictions",
                name="predict_test_split",
            ),
            Node(
                func=compute_metrics,
                inputs=["test_predictions", "classifier_metadata", "params:reporting"],
                outputs=["metrics", "reporting_mlflow_metrics"],
                name="compute_metrics",
            ),
            Node(
                func=plot_confusion_matrix,
                inputs=["test_predictions", "classifier_metadata"],
                outputs="confusion_matrix",
                name="plot_confusion_matrix",
            ),
        ]
    )
