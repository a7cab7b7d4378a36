"""Reporting pipeline: operating point, test metrics, figures, report, model card, packaging."""

from kedro.pipeline import Node, Pipeline

from .figures import (
    plot_confident_errors,
    plot_confusion_matrix,
    plot_gradcam,
    plot_learning_curves,
    plot_reliability,
    plot_roc_pr,
)
from .nodes import (
    choose_operating_point,
    compute_metrics,
    curve_tables,
    learning_curve_table,
    package_model,
    predict_test_split,
    predict_val_split,
)
from .report import FIGURES, render_report

P = "params:reporting"


def create_pipeline(**kwargs) -> Pipeline:
    """Create the reporting pipeline."""
    return Pipeline(
        [
            Node(
                func=predict_val_split,
                inputs=["classifier", "model_input", P],
                outputs="val_predictions",
                name="predict_val_split",
            ),
            Node(
                func=predict_test_split,
                inputs=["classifier", "model_input", P],
                outputs="test_predictions",
                name="predict_test_split",
            ),
            Node(
                func=choose_operating_point,
                inputs=["val_predictions", "classifier_metadata", P],
                outputs="operating_point",
                name="choose_operating_point",
            ),
            Node(
                func=compute_metrics,
                inputs=["test_predictions", "classifier_metadata", "operating_point", P],
                outputs=["metrics", "reporting_mlflow_metrics", "calibration_table"],
                name="compute_metrics",
            ),
            Node(
                func=curve_tables,
                inputs=["test_predictions", "classifier_metadata", P],
                outputs=["roc_table", "pr_table"],
                name="curve_tables",
            ),
            Node(
                func=learning_curve_table,
                inputs="finetune_history",
                outputs="learning_curves_table",
                name="learning_curve_table",
            ),
            Node(
                func=plot_confusion_matrix,
                inputs=["test_predictions", "classifier_metadata", P],
                outputs="confusion_matrix_figure",
                name="plot_confusion_matrix",
            ),
            Node(
                func=plot_roc_pr,
                inputs=["roc_table", "pr_table", "metrics", P],
                outputs="roc_pr_figure",
                name="plot_roc_pr",
            ),
            Node(
                func=plot_reliability,
                inputs=["calibration_table", "metrics", P],
                outputs="reliability_figure",
                name="plot_reliability",
            ),
            Node(
                func=plot_learning_curves,
                inputs=["learning_curves_table", P],
                outputs="learning_curves_figure",
                name="plot_learning_curves",
            ),
            Node(
                func=plot_confident_errors,
                inputs=["test_predictions", "model_input", P],
                outputs="confident_errors_figure",
                name="plot_confident_errors",
            ),
            Node(
                func=plot_gradcam,
                inputs=["classifier", "test_predictions", "model_input", "classifier_metadata", P],
                outputs="gradcam_figure",
                name="plot_gradcam",
            ),
            Node(
                func=render_report,
                inputs={
                    "metrics": "metrics",
                    "operating_point": "operating_point",
                    "metadata": "classifier_metadata",
                    "manifest": "validated_manifest",
                    "predictions": "test_predictions",
                    "params": P,
                    **{name: f"{name}_figure" for name, _ in FIGURES},
                },
                outputs=["report_html", "model_card"],
                name="render_report",
            ),
            Node(
                func=package_model,
                inputs=["classifier", "classifier_metadata", "operating_point"],
                outputs=["serving_model", "tf_serving_model"],
                name="package_model",
            ),
        ]
    )
