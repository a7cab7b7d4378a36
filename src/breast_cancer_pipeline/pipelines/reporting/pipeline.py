"""Reporting pipeline: operating point, test metrics, figures, report, model card, packaging."""

from collections.abc import Callable

from kedro.pipeline import Node, Pipeline

from breast_cancer_pipeline.context import run_parameters
from breast_cancer_pipeline.evaluation.folds import fold_name

from . import cross_validation as cv
from .external import external_metrics, predict_external_split
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


def _metric_nodes(n_folds: int) -> list[Node]:
    """Predictions, the validation operating point, test metrics and curve tables."""
    with_cv = ["cv_summary"] if n_folds >= 2 else []
    return [
        _node(predict_val_split, ["classifier", "model_input", P], "val_predictions"),
        _node(predict_test_split, ["classifier", "model_input", P], "test_predictions"),
        _node(
            choose_operating_point,
            ["val_predictions", "classifier_metadata", P],
            "operating_point",
        ),
        _node(
            predict_external_split,
            ["classifier", "external_model_input", P],
            "external_predictions",
        ),
        _node(
            external_metrics,
            ["external_predictions", "classifier_metadata", "operating_point", P],
            "external_metrics",
        ),
        _node(
            compute_metrics,
            [
                "test_predictions",
                "classifier_metadata",
                "operating_point",
                P,
                "external_metrics",
                *with_cv,
            ],
            ["metrics", "reporting_mlflow_metrics", "calibration_table"],
        ),
        _node(
            curve_tables, ["test_predictions", "classifier_metadata", P], ["roc_table", "pr_table"]
        ),
        _node(learning_curve_table, "finetune_history", "learning_curves_table"),
    ]


def _cv_nodes(n_folds: int, ensemble: bool) -> list[Node]:
    """The ``cv`` block of metrics.json, the folds' MLflow metrics and the per-fold figure."""
    if n_folds < 2:
        return []
    fold_tests = [f"{fold_name(i)}.test_predictions" for i in range(1, n_folds + 1)]
    return [
        _node(
            cv.cross_validation_summary,
            [
                "oof_predictions",
                "test_predictions",
                "classifier_metadata",
                P,
                "params:evaluation",
                *fold_tests,
            ],
            ["cv_summary", "cv_mlflow_metrics"],
        ),
        _node(cv.plot_cv_folds, ["cv_summary", P], "cv_folds_figure"),
    ] + _ensemble_nodes(ensemble)


def _ensemble_nodes(ensemble: bool) -> list[Node]:
    """The served ensemble's threshold: the validation rule on the out-of-fold predictions."""
    if not ensemble:
        return []
    return [
        Node(
            func=choose_operating_point,
            inputs=["oof_predictions", "classifier_metadata", P],
            outputs="ensemble_operating_point",
            name="choose_ensemble_operating_point",
        ),
    ]


def _report_nodes(n_folds: int, ensemble: bool) -> list[Node]:
    """The report and model card (fed every figure), and the packaged serving model."""
    report_inputs = {
        "metrics": "metrics",
        "operating_point": "operating_point",
        "metadata": "classifier_metadata",
        "manifest": "validated_manifest",
        "predictions": "test_predictions",
        "params": P,
        **{name: f"{name}_figure" for name, _ in FIGURES},
        **({"cv_folds": "cv_folds_figure"} if n_folds >= 2 else {}),
    }
    return [
        _node(render_report, report_inputs, ["report_html", "model_card"]),
        _node(package_model, _served(n_folds, ensemble), ["serving_model", "tf_serving_model"]),
    ]


def _served(n_folds: int, ensemble: bool) -> list[str]:
    """``package_model``'s inputs: the classifier, or the fold models (``evaluation.ensemble``)."""
    if not ensemble:
        return ["classifier", "classifier_metadata", "operating_point"]
    folds = [f"{fold_name(i)}.classifier" for i in range(1, n_folds + 1)]
    return [folds[0], "classifier_metadata", "ensemble_operating_point", *folds[1:]]


def create_pipeline(**kwargs) -> Pipeline:
    """Create the reporting pipeline (with the folds' summary when ``evaluation.folds`` ≥ 2)."""
    evaluation = run_parameters()["evaluation"]
    n_folds, ensemble = int(evaluation["folds"]), bool(evaluation["ensemble"])
    figures = [_node(func, [*inputs, P], output) for func, inputs, output in FIGURE_NODES]
    return Pipeline(
        [
            *_metric_nodes(n_folds),
            *_cv_nodes(n_folds, ensemble),
            *figures,
            *_report_nodes(n_folds, ensemble),
        ]
    )
