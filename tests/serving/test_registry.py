"""The registry: the test metrics and model card on each version, and the gate that moves
``@champion``."""

from __future__ import annotations

import mlflow
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Node, Pipeline

from breast_cancer_pipeline.hooks import ChampionHook
from breast_cancer_pipeline.serving import REGISTERED_MODEL_NAME, registry
from tests.params import base_params
from tests.serving._served import served_pipeline

pytestmark = pytest.mark.usefixtures("mlflow_store")

NAME = REGISTERED_MODEL_NAME
RULE = {"metric": "auroc", "min_ci_low": 0.8, "max_drop": 0.01}


def _metrics(auroc: float, low: float) -> dict:
    return {
        "n_test": 66,
        "backbone": "small_cnn",
        "auroc": auroc,
        "auroc_ci_low": low,
        "auroc_ci_high": min(1.0, auroc + 0.02),
        "accuracy": 0.9,
        "threshold_rule": "sensitivity>=0.95",
        "auroc_per_class": {"benign": 0.97, "malignant": 0.96},
        "ece_positive": None,
    }


@pytest.mark.parametrize(
    ("metrics", "champion", "promote", "reason"),
    [
        (_metrics(0.95, 0.85), None, True, "CI low 0.8500 >= 0.8; no champion before"),
        (_metrics(0.95, 0.79), None, False, "CI low 0.7900 < 0.8 (reporting.champion.min_ci_low)"),
        (_metrics(0.95, 0.85), ("3", 0.955), True, "vs champion v3's 0.9550 (max drop 0.01)"),
        (
            _metrics(0.94, 0.85),
            ("3", 0.955),
            False,
            "0.9400 is more than 0.01 below champion v3's 0.9550 (reporting.champion.max_drop)",
        ),
        (_metrics(0.95, 0.85), ("3", None), True, "champion v3 has no test.auroc to compare"),
        ({"auroc": None, "auroc_ci_low": None}, None, False, "auroc_ci_low is undefined"),
    ],
)
def test_gate(metrics, champion, promote, reason):
    decision = registry.gate(metrics, RULE, champion)
    assert decision.promote is promote
    assert reason in decision.reason


def test_numeric_metrics_become_version_tags():
    tags = registry.metric_tags(_metrics(0.95, 0.85))
    assert tags["test.auroc"] == "0.95" and tags["test.auroc_ci_low"] == "0.85"
    assert tags["test.auroc_per_class.malignant"] == "0.96"
    assert "test.backbone" not in tags and "test.ece_positive" not in tags


class _Echo(mlflow.pyfunc.PythonModel):
    """A registered model that costs nothing to log (the registry does not look inside)."""

    def predict(self, context, model_input, params=None):
        return model_input


def _registered_run(with_card: bool = True) -> str:
    """A run that logged a model card and registered a version of NAME, as training does."""
    with mlflow.start_run() as run:
        if with_card:
            mlflow.log_text("# Model card\n", registry.MODEL_CARD)
        mlflow.log_metric("test.auroc", 0.9)
        mlflow.pyfunc.log_model(
            name="model",
            python_model=_Echo(),
            registered_model_name=NAME,
            pip_requirements=["mlflow"],
        )
    return run.info.run_id


def _champion_version():
    return str(mlflow.MlflowClient().get_model_version_by_alias(NAME, registry.CHAMPION).version)


def test_the_alias_moves_only_to_versions_that_pass_the_gate():
    client = mlflow.MlflowClient()
    first = _registered_run()
    assert registry.record_version(NAME, first, _metrics(0.95, 0.85), RULE).promote
    assert _champion_version() == "1"

    low = _registered_run()
    decision = registry.record_version(NAME, low, _metrics(0.99, 0.7), RULE)
    assert not decision.promote
    assert _champion_version() == "1"  # still registered, not served
    run = client.get_run(low)
    assert run.data.tags["champion.decision"] == "not promoted"
    assert "min_ci_low" in run.data.tags["champion.reason"]
    assert run.data.tags["registry.version"] == f"{NAME}/2"

    worse = _registered_run()
    assert not registry.record_version(NAME, worse, _metrics(0.93, 0.85), RULE).promote
    assert "max_drop" in client.get_run(worse).data.tags["champion.reason"]

    close = _registered_run()
    assert registry.record_version(NAME, close, _metrics(0.945, 0.85), RULE).promote
    assert _champion_version() == "4"

    version = client.get_model_version(NAME, "2")
    assert version.tags["test.auroc"] == "0.99"
    assert version.tags["test.auroc_per_class.benign"] == "0.97"
    assert version.tags["champion.decision"] == "not promoted"
    assert version.tags["model_card"] == f"runs:/{low}/model_card.md"
    assert "- auroc: 0.990 [0.700, 1.000]" in version.description
    assert f"runs/{low}/artifactPath/model_card.md" in version.description
    assert "Champion gate: not promoted: test auroc 0.9900, CI low 0.7000" in version.description


def test_a_run_without_a_registered_version_decides_nothing():
    with mlflow.start_run() as run:
        pass
    assert registry.record_version(NAME, run.info.run_id, _metrics(0.95, 0.85), RULE) is None


def test_the_hook_records_the_version_of_a_served_model_run():
    """After kedro-mlflow logged and registered the model: the hook reads metrics and rule."""
    pipeline = served_pipeline(Pipeline([Node(lambda: None, None, "serving_model")]))
    reporting = base_params("reporting")
    assert reporting["champion"] == {"metric": "auroc", "min_ci_low": 0.8, "max_drop": 0.01}
    catalog = DataCatalog(
        {
            "params:reporting": MemoryDataset(reporting),
            "metrics": MemoryDataset(_metrics(0.95, 0.85)),
        }
    )
    hook = ChampionHook()
    run_id = _registered_run()
    with mlflow.start_run(run_id=run_id):
        hook.before_pipeline_run()
    hook.after_pipeline_run(pipeline, catalog)  # kedro-mlflow has ended the run by then
    assert _champion_version() == "1"
    assert mlflow.get_run(run_id).data.tags["champion.decision"] == "promoted"
    # A plain pipeline (no served model) leaves the registry alone.
    hook.after_pipeline_run(Pipeline([Node(lambda: None, None, "x")]), catalog)


@pytest.mark.parametrize(
    ("champion", "message"),
    [
        ({"metric": "f1"}, r"reporting\.champion\.metric = 'f1'.*'auroc' or 'auroc_positive'"),
        ({"min_ci_low": 1.5}, r"reporting\.champion\.min_ci_low = 1\.5"),
        ({"max_drop": -0.1}, r"reporting\.champion\.max_drop = -0\.1"),
    ],
)
def test_bad_gate_parameters_name_the_key(champion, message):
    from breast_cancer_pipeline.param_schema import ParameterError, validate_block

    validate_block("reporting", base_params("reporting"))
    with pytest.raises(ParameterError, match=message):
        validate_block("reporting", base_params("reporting", champion=champion))
