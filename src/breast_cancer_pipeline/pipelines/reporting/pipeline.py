"""Reporting pipeline: operating point, test metrics, figures, report, model card, packaging."""

from collections.abc import Callable

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
from .ood import fit_ood_score, ood_summary, plot_ood_scores
from .report import FIGURES, render_report

P = "params:reporting"
OOD = "params:inference.serving.ood"

#: The figure nodes: function (its name is the node's), inputs before the reporting
#: parameters, and the PNG dataset it writes.
FIGURE_NODES = (
    (plot_confusion_matrix, ["test_predictions", "classifier_metadata"], "confusion_matrix_figure"),
    (plot_roc_pr, ["roc_table", "pr_table", "metrics"], "roc_pr_figure"),
    (plot_reliability, ["calibration_table", "metrics"], "reliability_figure"),
    (plot_learning_curves, ["learning_curves_table"], "learning_curves_figure"),
    (plot_confident_errors, ["test_predictions", "model_input"], "confident_errors_figure"),
    (
        plot_gradcam,
        ["classifier", "test_predictions", "model_input", "classifier_metadata"],
        "gradcam_figure",
    ),
)


def _node(
    func: Callable, inputs: str | list[str] | dict[str, str], outputs: str | list[str]
) -> Node:
    return Node(func=func, inputs=inputs, outputs=outputs, name=func.__name__)


def _metric_nodes() -> list[Node]:
    """Predictions, the validation operating point, test metrics and curve tables."""
    return [
        _node(predict_val_split, ["classifier", "model_input", P], "val_predictions"),
        _node(predict_test_split, ["classifier", "model_input", P], "test_predictions"),
        _node(
            choose_operating_point,
            ["val_predictions", "classifier_metadata", P],
            "operating_point",
        ),
        _node(
            fit_ood_score, ["classifier", "model_input", P, OOD], ["ood_statistics", "ood_scores"]
        ),
        _node(
            ood_summary,
            ["ood_statistics", "ood_scores", OOD],
            ["ood_metrics", "ood_mlflow_metrics"],
        ),
        _node(
            compute_metrics,
            ["test_predictions", "classifier_metadata", "operating_point", P, "ood_metrics"],
            ["metrics", "reporting_mlflow_metrics", "calibration_table"],
        ),
        _node(
            curve_tables, ["test_predictions", "classifier_metadata", P], ["roc_table", "pr_table"]
        ),
        _node(learning_curve_table, "finetune_history", "learning_curves_table"),
    ]


def _report_nodes() -> list[Node]:
    """The report and model card (fed every figure), and the packaged serving model."""
    report_inputs = {
        "metrics": "metrics",
        "operating_point": "operating_point",
        "metadata": "classifier_metadata",
        "manifest": "validated_manifest",
        "predictions": "test_predictions",
        "params": P,
        **{name: f"{name}_figure" for name, _ in FIGURES},
        "ood_figure": "ood_scores_figure",
    }
    return [
        _node(render_report, report_inputs, ["report_html", "model_card"]),
        _node(
            package_model,
            ["classifier", "classifier_metadata", "operating_point", "ood_statistics"],
            ["serving_model", "tf_serving_model"],
        ),
    ]


def create_pipeline(**kwargs) -> Pipeline:
    """Create the reporting pipeline."""
    figures = [_node(func, [*inputs, P], output) for func, inputs, output in FIGURE_NODES]
    figures.append(_node(plot_ood_scores, ["ood_scores", "ood_metrics", P], "ood_scores_figure"))
    return Pipeline([*_metric_nodes(), *figures, *_report_nodes()])
