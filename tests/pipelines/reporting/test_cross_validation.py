"""The cv block of metrics.json, its figure and the report's cross-validation section."""

import base64
import math

import numpy as np
import pandas as pd
import pytest

from breast_cancer_pipeline.pipelines.reporting.cross_validation import cross_validation_summary
from breast_cancer_pipeline.pipelines.reporting.figures import plot_cv_folds
from breast_cancer_pipeline.pipelines.reporting.nodes import compute_metrics
from breast_cancer_pipeline.pipelines.reporting.report import render_report
from breast_cancer_pipeline.pipelines.reporting.sections import cross_validation_context
from tests.params import base_params

from .test_report import META, PARAMS, POINT, _manifest, _predictions

CLASSES = ("benign", "malignant")


def _table(y: np.ndarray, score: np.ndarray, paths: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "path": paths,
            "label": [CLASSES[i] for i in y],
            "p_benign": 1 - score,
            "p_malignant": score,
        }
    )


def test_the_cv_block_holds_per_fold_spread_pooled_auroc_and_the_ensemble():
    rng = np.random.default_rng(3)
    y = np.tile([0, 1], 30)
    fold = np.repeat([1, 2, 3], 20)
    # Fold 1 separates perfectly, fold 3 not at all: the spread must show it.
    score = np.where(fold == 1, y * 0.8 + 0.1, np.where(fold == 2, 0.3 * y + 0.35, 0.5))
    score = np.clip(score + rng.normal(0, 0.01, len(y)) * (fold == 3), 0, 1)
    oof = _table(y, score, [f"i{i}" for i in range(len(y))]).assign(fold=fold)
    y_test = np.tile([0, 1], 10)
    paths = [f"t{i}" for i in range(20)]
    single = _table(y_test, np.where(y_test == 1, 0.6, 0.4) + rng.normal(0, 0.2, 20), paths)
    members = [
        _table(y_test, np.clip(y_test * 0.5 + 0.25 + rng.normal(0, 0.2, 20), 0, 1), paths)
        for _ in range(3)
    ]
    reporting = base_params("reporting", bootstrap={"n_resamples": 50})
    evaluation = base_params("evaluation", folds=3, ensemble=True)
    cv, mlflow_metrics = cross_validation_summary(
        oof, single, {"class_names": list(CLASSES)}, reporting, evaluation, None, *members
    )

    per_fold = [cv["per_fold"][f"fold_{i}"]["auroc"] for i in (1, 2, 3)]
    assert per_fold[:2] == [1.0, 1.0] and 0.2 < per_fold[2] < 0.8
    assert cv["auroc_mean"] == pytest.approx(np.mean(per_fold))
    assert cv["auroc_std"] == pytest.approx(np.std(per_fold, ddof=1))
    # t(0.975, 2) = 4.303: the interval of the mean over 3 folds.
    half = 4.3027 * cv["auroc_std"] / math.sqrt(3)
    assert cv["auroc_ci_low"] == pytest.approx(cv["auroc_mean"] - half, abs=1e-3)
    assert cv["auroc_mean"] + half > 1 and cv["auroc_ci_high"] == 1.0  # clipped to [0, 1]
    assert cv["auroc_pooled_ci_low"] <= cv["auroc_pooled"] <= cv["auroc_pooled_ci_high"]
    from sklearn.metrics import roc_auc_score

    assert cv["auroc_pooled"] == pytest.approx(roc_auc_score(y, score))
    mean_member = np.mean([f["p_malignant"] for f in members], axis=0)
    assert cv["ensemble"]["test_auroc"] == pytest.approx(roc_auc_score(y_test, mean_member))
    assert cv["ensemble"]["single_test_auroc"] == pytest.approx(
        roc_auc_score(y_test, single["p_malignant"])
    )
    assert mlflow_metrics["cv.fold_3.auroc"]["value"] == pytest.approx(per_fold[2])
    assert mlflow_metrics["cv.auroc_pooled"]["value"] == pytest.approx(cv["auroc_pooled"])
    assert "cv.ensemble.test_auroc" in mlflow_metrics

    figure = plot_cv_folds(cv, reporting)
    assert figure.startswith(b"\x89PNG")
    context = cross_validation_context({"cv": cv}, figure)
    assert [row[0] for row in context["rows"]] == ["fold_1", "fold_2", "fold_3"]
    assert "optimistically biased" in context["bias"] and context["figure"]
    assert cross_validation_context({"auroc": 0.9}, None) is None  # one split: no section


def test_the_report_shows_the_folds_and_the_selection_bias_only_with_folds():
    rng = np.random.default_rng(0)
    y = np.tile([0, 1], 12)
    oof = _table_of(y, np.clip(0.5 * y + 0.25 + rng.normal(0, 0.2, 24), 0, 1))
    cv, _ = cross_validation_summary(
        oof.assign(fold=np.repeat([1, 2, 3], 8)),
        _predictions(),
        META,
        PARAMS,
        base_params("evaluation", folds=3, ensemble=True),
        None,
        *[_predictions()] * 3,
    )
    single = compute_metrics(_predictions(), META, POINT, PARAMS)[0]
    with_cv = compute_metrics(_predictions(), META, POINT, PARAMS, cv=cv)[0]
    assert "cv" not in single and with_cv["cv"] == cv
    assert {k: v for k, v in with_cv.items() if k != "cv"} == single

    figure = plot_cv_folds(cv, PARAMS)
    html, card = render_report(
        with_cv, POINT, META, _manifest(), _predictions(), PARAMS, cv_folds=figure
    )
    section = html.split('id="cross-validation"', 1)[1].split("<h2>", 1)[0]
    assert "3 folds by patient" in section and "optimistically biased" in section
    folds_table = section.split("</table>", 1)[0]
    assert folds_table.count("<tr>") == 4  # header and one row per fold
    assert "average of 3 fold models" in section and "served model averages" in section
    assert base64.b64encode(figure).decode() in section
    plain, plain_card = render_report(single, POINT, META, _manifest(), _predictions(), PARAMS)
    assert "cross-validation" not in plain and plain_card == card


def _table_of(y: np.ndarray, score: np.ndarray) -> pd.DataFrame:
    return _table(y, score, [f"d{i}" for i in range(len(y))])
