"""Experiments you can rerun and compare: `dvc repro`, `dvc exp run -S`, a remote.

The flow (:mod:`tests.whole_dag`, shared with `tests/test_run.py`) runs once per session in
a throw-away copy of the project with its own git repository and a tiny demo environment:
`dvc repro` → commit → `dvc exp run -S` on the fine-tuning learning rate → `dvc exp show` /
`dvc metrics diff` → `dvc push` to a local remote, cache and outputs wiped, `dvc pull`. The
tests below check what each step left behind and the project's MLflow database.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from breast_cancer_pipeline.pipeline_registry import TRAINING_STAGES
from tests.whole_dag import EXPERIMENT, METRICS, Experiments, experiments_flow, pipeline_runs

pytestmark = pytest.mark.slow

#: Every DVC stage: the demo data, then the stages of a training run.
STAGES = ["demo_data", *TRAINING_STAGES]


@pytest.fixture(scope="module")
def experiments(tmp_path_factory) -> Experiments:
    """The session's demo flow (:func:`tests.whole_dag.experiments_flow`), run once."""
    return experiments_flow(tmp_path_factory)


def _metrics(row: dict) -> dict:
    return row["data"]["metrics"][METRICS]["data"]


def _learning_rate(row: dict) -> float:
    params = row["data"]["params"]["conf/demo/parameters.yml"]["data"]
    return params["finetune"]["phase2"]["learning_rate"]


def _baseline_and_experiment(experiments: Experiments) -> tuple[dict, dict]:
    """The rows of `dvc exp show --json` for the baseline commit and the experiment on it."""
    (baseline,) = [row for row in experiments.exp_show if row["rev"] == experiments.baseline]
    (experiment,) = [
        rev
        for group in baseline["experiments"] or []
        for rev in group["revs"]
        if rev["name"] == EXPERIMENT
    ]
    return baseline, experiment


def test_dvc_repro_under_the_demo_environment_versions_metrics_and_plots_in_git(experiments):
    lock = yaml.safe_load((experiments.project / "dvc.lock").read_text())
    assert lock["stages"]["finetune"]["cmd"] == "kedro run --env=demo --pipelines=finetune"
    assert lock["stages"]["finetune"]["params"]["params.yaml"] == {"kedro_env": "demo"}
    assert METRICS in experiments.tracked
    assert {"roc.csv", "pr.csv", "calibration.csv", "learning_curves.csv"} <= {
        Path(name).name for name in experiments.tracked if name.startswith("data/08_reporting/")
    }
    assert "data/06_models/classifier.keras" not in experiments.tracked  # in the DVC cache


def test_changing_the_learning_rate_reruns_exactly_finetune_and_reporting(experiments):
    ran = [
        line.split("'")[1]
        for line in experiments.output["dvc exp run"].splitlines()
        if line.startswith("Running stage")
    ]
    assert ran == ["finetune", "reporting"]


def test_exp_show_lists_the_baseline_and_the_experiment_with_their_test_auroc(experiments):
    baseline, experiment = _baseline_and_experiment(experiments)
    assert (_learning_rate(baseline), _learning_rate(experiment)) == (0.001, 0.0005)
    assert 0.0 <= _metrics(baseline)["auroc"] <= 1.0
    # The experiment's results are in the workspace: exp show reads the same file.
    workspace = json.loads((experiments.project / METRICS).read_text())
    assert _metrics(experiment)["auroc"] == workspace["auroc"]


def test_metrics_diff_compares_the_baseline_with_the_experiment(experiments):
    baseline, experiment = _baseline_and_experiment(experiments)
    auroc = experiments.metrics_diff["auroc"]
    assert (auroc["old"], auroc["new"]) == (
        _metrics(baseline)["auroc"],
        _metrics(experiment)["auroc"],
    )
    changed = [name for name, values in experiments.metrics_diff.items() if values.get("diff")]
    assert "log_loss" in changed  # another learning rate, another model


def test_push_then_pull_restores_the_wiped_cache_and_outputs(experiments):
    assert experiments.restored_md5 == experiments.model_md5
    assert "Data and pipelines are up to date" in experiments.output["dvc status"]
    assert any(experiments.remote.rglob("*")), "nothing was pushed"


def test_every_run_carries_commit_env_stage_and_data_digest_and_one_group(experiments):
    _, _, runs = pipeline_runs(experiments)
    # The repro runs every stage once; the experiment reruns finetune and reporting.
    assert sorted(r.data.tags["dvc.stage"] for r in runs) == sorted(
        [*STAGES, "finetune", "reporting"]
    )
    for r in runs:
        tags = r.data.tags
        assert tags["kedro.env"] == "demo"
        assert tags["kedro.pipelines"] == tags["dvc.stage"]
        assert len(tags["git.commit"]) == 40
        assert tags["git.dirty"] in ("true", "false")
        assert tags["dvc.stage"] == "demo_data" or len(tags["data.manifest_digest"]) == 12
    repro = [r for r in runs if "dvc.exp_name" not in r.data.tags]
    exp = [r for r in runs if r.data.tags.get("dvc.exp_name") == EXPERIMENT]
    assert len({r.data.tags["lineage.group"] for r in repro}) == 1
    assert {r.data.tags["lineage.group"] for r in exp} == {f"exp:{EXPERIMENT}"}
    assert {r.data.tags["lineage.baseline_group"] for r in exp} == {
        repro[0].data.tags["lineage.group"]
    }
    assert {r.data.tags["git.commit"] for r in exp} == {experiments.baseline}
    digests = {
        r.data.tags["data.manifest_digest"] for r in runs if r.data.tags["dvc.stage"] != "demo_data"
    }
    assert len(digests) == 1


def test_model_versions_have_signatures_and_champion_is_the_promoted_one(experiments):
    import mlflow

    client, _, _ = pipeline_runs(experiments)
    versions = sorted(
        client.search_model_versions("name='breast-cancer-classifier'"),
        key=lambda v: int(v.version),
    )
    assert len(versions) == 2
    for version in versions:
        info = mlflow.models.get_model_info(f"models:/breast-cancer-classifier/{version.version}")
        columns = [c["name"] for c in info.signature.inputs.to_dict()]
        # The image, its identifier, explain, and the columns of a level (issue 27).
        assert columns == ["image", "id", "path", "explain", "group", "laterality", "view", "study"]
        assert info.saved_input_example_info["type"] == "dataframe"
        assert "test.auroc" in version.tags
        # The exported files travel with the version, beside the Keras model.
        packaged = f"models:/breast-cancer-classifier/{version.version}/artifacts/serving_model"
        files = {a.path.rsplit("/", 1)[-1] for a in mlflow.artifacts.list_artifacts(packaged)}
        assert {"model.keras", "model.onnx", "model.tflite", "serving.json"} <= files
    assert client.get_run(versions[1].run_id).data.tags["lineage.group"] == f"exp:{EXPERIMENT}"
    promoted = [v for v in versions if v.tags["champion.decision"] == "promoted"]
    assert promoted
    champion = client.get_model_version_by_alias("breast-cancer-classifier", "champion")
    assert str(champion.version) == str(promoted[-1].version)
