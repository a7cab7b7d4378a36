"""Reporting pipeline: operating point, test metrics, figures, report, model card, packaging."""

from collections.abc import Callable

from kedro.pipeline import Node, Pipeline

from breast_cancer_pipeline.context import run_parameters
from breast_cancer_pipeline.evaluation.folds import fold_name
from breast_cancer_pipeline.tiles import uses_attention

from .calibration import calibration_report
from .cross_validation import cross_validation_summary
from .explanation import explanation_metrics
from .export import export_served_model
from .external import external_metrics
from .figures import (
    plot_confident_errors,
    plot_confusion_matrix,
    plot_cv_folds,
    plot_decision_curve,
    plot_gradcam,
    plot_learning_curves,
    plot_ood_scores,
    plot_reliability,
    plot_roc_pr,
    plot_subgroups,
)
from .fits.conformal import serving_calibration
from .fits.ood import fit_ood_score
from .fits.operating_point import choose_operating_point
from .fits.recalibration import fit_calibration
from .levels import (
    choose_level_operating_points,
    evaluation_keys,
    level_metrics,
    level_predictions,
)
from .net_benefit import decision_curves
from .nodes import (
    attach_attention_head,
    compute_metrics,
    curve_tables,
    learning_curve_table,
    package_model,
    serving_settings,
)
from .ood import ood_summary
from .predictions import (
    predict_external_split,
    predict_single_model_test,
    predict_test_split,
    predict_val_split,
)
from .report import FIGURES, render_report
from .subgroups import subgroup_metrics
from .tiles import tile_metrics

P = "params:reporting"
E = "params:evaluation"
M = "classifier_metadata"
OOD = "params:inference.serving.ood"
#: What reporting reads of each image off the manifest (patient, levels, subgroups).
KEYS = "evaluation_keys"

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
    (plot_subgroups, ["metrics"], "subgroups_figure"),
    (plot_decision_curve, ["decision_curve_table", "metrics"], "decision_curve_figure"),
)


def _node(
    func: Callable, inputs: str | list[str] | dict[str, str], outputs: str | list[str]
) -> Node:
    return Node(func=func, inputs=inputs, outputs=outputs, name=func.__name__)


def _metric_nodes(n_folds: int, ensemble: bool, attention: bool = False) -> list[Node]:
    """Predictions, the validation operating point, test metrics and curve tables."""
    return [
        *_calibration_nodes(ensemble, attention),
        _node(
            choose_operating_point,
            ["val_predictions", "classifier_metadata", P],
            "operating_point",
        ),
        _node(
            predict_external_split,
            ["serving_model", "external_model_input", P],
            "external_predictions",
        ),
        _node(
            external_metrics,
            ["external_predictions", "classifier_metadata", "operating_point", P, KEYS],
            "external_metrics",
        ),
        _node(
            fit_ood_score,
            [_first_served(n_folds, ensemble), "model_input", P, OOD],
            ["ood_statistics", "ood_scores"],
        ),
        _node(
            ood_summary,
            ["ood_statistics", "ood_scores", OOD],
            ["ood_metrics", "ood_mlflow_metrics"],
        ),
        _node(
            compute_metrics,
            {
                "predictions": "test_predictions",
                "metadata": "classifier_metadata",
                "operating_point": "operating_point",
                "params": P,
                "external": "external_metrics",
                "calibration_report": "calibration_report",
                "ood": "ood_metrics",
                "export": "export_report",
                **({"cv": "cv_summary"} if n_folds >= 2 else {}),
                "keys": KEYS,
                "levels": "level_metrics",
                "subgroups": "subgroup_metrics",
                "decision_curve": "decision_curve_summary",
                "explanation": "explanation_metrics",
                "tiles": "tile_metrics",
            },
            ["metrics", "reporting_mlflow_metrics", "calibration_table"],
        ),
        _node(
            explanation_metrics,
            [
                "classifier",
                "model_input",
                "intermediate_images",
                "validated_manifest",
                KEYS,
                M,
                P,
            ],
            "explanation_metrics",
        ),
        _node(
            curve_tables, ["test_predictions", "classifier_metadata", P], ["roc_table", "pr_table"]
        ),
        _node(learning_curve_table, "finetune_history", "learning_curves_table"),
        _node(tile_metrics, ["serving_model", "model_input", P], "tile_metrics"),
    ]


def _level_nodes() -> list[Node]:
    """Levels, subgroups and the decision curve (``levels``, ``subgroups``, ``decision_curve``).

    ``evaluation_keys`` reads only the validated manifest: in a whole run it comes right
    after the validation gate, so a missing level column stops the run before training.
    """
    return [
        _node(evaluation_keys, ["validated_manifest", E, P], KEYS),
        _node(
            level_predictions,
            ["val_predictions", "test_predictions", "external_predictions", KEYS, M, E, P],
            "level_predictions",
        ),
        _node(
            choose_level_operating_points,
            ["val_predictions", KEYS, "operating_point", M, E, P],
            "level_operating_points",
        ),
        _node(
            level_metrics,
            ["level_predictions", "level_operating_points", M, E, P],
            ["level_metrics", "levels_mlflow_metrics"],
        ),
        _node(
            subgroup_metrics,
            ["test_predictions", "external_predictions", KEYS, "operating_point", M, P],
            "subgroup_metrics",
        ),
        _node(
            decision_curves,
            ["test_predictions", "level_predictions", M, P],
            ["decision_curve_table", "decision_curve_summary"],
        ),
    ]


def _cv_nodes(n_folds: int, ensemble: bool) -> list[Node]:
    """The ``cv`` block of metrics.json, the folds' MLflow metrics and the per-fold figure."""
    if n_folds < 2:
        return []
    fold_tests = [f"{fold_name(i)}.test_predictions" for i in range(1, n_folds + 1)]
    # With the ensemble served, test_predictions are the ensemble's: the single model beside it.
    single = "single_model_test_predictions" if ensemble else "test_predictions"
    nodes = [
        _node(
            cross_validation_summary,
            ["oof_predictions", single, "classifier_metadata", P, E, KEYS, *fold_tests],
            ["cv_summary", "cv_mlflow_metrics"],
        ),
        _node(plot_cv_folds, ["cv_summary", P], "cv_folds_figure"),
    ]
    if ensemble:
        nodes.append(_node(predict_single_model_test, ["classifier", "model_input", P], single))
    return nodes


def _calibration_nodes(ensemble: bool, attention: bool = False) -> list[Node]:
    """Validation and test through the serving model; temperature and conformal threshold.

    The order is the point: the temperature is fitted on the validation predictions, the
    operating threshold (``choose_operating_point``) and the conformal threshold are chosen
    on the recalibrated ones, and the test split is predicted by the packaged model. With
    ``evaluation.ensemble`` the served model is the fold models' average, whose held-out
    predictions are the out-of-fold ones: the temperature, the threshold and the conformal
    sets are fitted on those. With ``attention`` the validation images' tiles are combined by
    the attention head, as served.
    """
    if ensemble:
        validation = []
    else:
        validation = [
            _node(
                predict_val_split,
                ["classifier", "model_input", M, P, E, *(["attention_head"] if attention else [])],
                "val_predictions_uncalibrated",
            )
        ]
    held_out = "oof_predictions" if ensemble else "val_predictions_uncalibrated"
    return [
        *validation,
        _node(fit_calibration, [held_out, M, E, P, KEYS], ["calibration_fit", "val_predictions"]),
        _node(
            serving_calibration,
            ["calibration_fit", "val_predictions", M, E, "params:inference"],
            "probability_settings",
        ),
        _node(
            predict_test_split,
            ["serving_model", "model_input", P],
            ["test_predictions", "test_predictions_uncalibrated", "test_predictions_without_tta"],
        ),
        _node(
            calibration_report,
            [
                "test_predictions",
                "test_predictions_uncalibrated",
                "test_predictions_without_tta",
                "calibration_fit",
                "probability_settings",
                M,
                P,
                KEYS,
            ],
            "calibration_report",
        ),
    ]


def _report_nodes(
    n_folds: int, ensemble: bool, levels: bool, attention: bool = False
) -> list[Node]:
    """The report and model card (fed every figure), and the packaged serving model.

    ``package_model`` bundles the classifier (or the fold models) with its settings (with
    ``evaluation.levels``, the levels' operating points) and, with ``attention``, the
    attention head that combines an image's tiles; ``export_served_model`` adds the ONNX and
    LiteRT files that match Keras on the test split.
    """
    report_inputs = {
        "metrics": "metrics",
        "operating_point": "operating_point",
        "metadata": "classifier_metadata",
        "manifest": "validated_manifest",
        "predictions": "test_predictions",
        "params": P,
        **{name: f"{name}_figure" for name, _ in FIGURES},
        "ood_figure": "ood_scores_figure",
        "subgroups": "subgroups_figure",
        "decision_curve": "decision_curve_figure",
        **({"cv_folds": "cv_folds_figure"} if n_folds >= 2 else {}),
    }
    with_levels = [
        _node(
            serving_settings,
            ["probability_settings", "level_operating_points"],
            "serving_settings",
        )
    ]
    served = _served(n_folds, ensemble, levels)
    packaged = "packaged_tile_model" if attention else "packaged_model"
    with_head = (
        [_node(attach_attention_head, [packaged, "attention_head"], "packaged_model")]
        if attention
        else []
    )
    return [
        _node(render_report, report_inputs, ["report_html", "model_card"]),
        *(with_levels if levels else []),
        _node(package_model, served, [packaged, "tf_serving_model"]),
        *with_head,
        _node(
            export_served_model,
            ["packaged_model", "model_input", "params:inference.export"],
            ["serving_model", "export_report"],
        ),
    ]


def _served(n_folds: int, ensemble: bool, levels: bool) -> list[str]:
    """``package_model``'s inputs: the classifier, or the fold models (``evaluation.ensemble``)."""
    settings = [
        "classifier_metadata",
        "operating_point",
        "serving_settings" if levels else "probability_settings",
        "ood_statistics",
    ]
    if not ensemble:
        return ["classifier", *settings]
    folds = [f"{fold_name(i)}.classifier" for i in range(1, n_folds + 1)]
    return [folds[0], *settings, *folds[1:]]


def _first_served(n_folds: int, ensemble: bool) -> str:
    """The classifier whose features the served model reads (the ensemble's first member)."""
    return f"{fold_name(1)}.classifier" if ensemble else "classifier"


def create_pipeline(**kwargs) -> Pipeline:
    """Create the reporting pipeline (with the folds' summary when ``evaluation.folds`` ≥ 2)."""
    evaluation = run_parameters()["evaluation"]
    n_folds, ensemble = int(evaluation["folds"]), bool(evaluation["ensemble"])
    levels = bool(evaluation.get("levels"))
    # The head reads the single classifier's features: an ensemble combines tiles by mean.
    attention = uses_attention(run_parameters().get("augmentation") or {}) and not ensemble
    figures = [_node(func, [*inputs, P], output) for func, inputs, output in FIGURE_NODES]
    figures.append(_node(plot_ood_scores, ["ood_scores", "ood_metrics", P], "ood_scores_figure"))
    return Pipeline(
        [
            *_metric_nodes(n_folds, ensemble, attention),
            *_level_nodes(),
            *_cv_nodes(n_folds, ensemble),
            *figures,
            *_report_nodes(n_folds, ensemble, levels, attention),
        ]
    )
