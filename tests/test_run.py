"""End to end: what the whole DAG on a tiny demo dataset leaves behind, then inference.

The DAG is trained once per session by :mod:`tests.whole_dag` (`dvc repro`, one `kedro run`
per stage, then a `dvc exp run` that reruns fine-tuning alone), shared with
`tests/test_experiments.py`. The tests that run more of the project (inference, the EDA
notebook) do so in a copy of that trained project (:func:`trained`), so the flow's own
outputs and MLflow runs stay as the experiment tests read them.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.whole_dag import (
    CANDIDATES,
    EXPERIMENT,
    IMAGES_PER_CLASS,
    METRICS,
    MODEL,
    Experiments,
    experiments_flow,
    pipeline_runs,
)

PROJECT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def experiments(tmp_path_factory) -> Experiments:
    """The session's demo flow (:func:`tests.whole_dag.experiments_flow`), run once."""
    return experiments_flow(tmp_path_factory)


@pytest.fixture(scope="module")
def trained(experiments, tmp_path_factory) -> Path:
    """A copy of the trained project (data, conf, MLflow database), free to run stages in."""
    root = tmp_path_factory.mktemp("trained") / "project"
    shutil.copytree(experiments.project, root, ignore=shutil.ignore_patterns(".git", ".dvc"))
    return root


def _run(project: Path, pipeline: str, monkeypatch, runtime_params: dict | None = None):
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    monkeypatch.chdir(project)
    monkeypatch.setenv("KEDRO_ENV", "demo")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")
    bootstrap_project(project)
    with KedroSession.create(project_path=project, env="demo", runtime_params=runtime_params) as s:
        s.run(pipeline_names=[pipeline])
    import mlflow

    # One run per session, as with one `kedro run` per process.
    while mlflow.active_run() is not None:
        mlflow.end_run()


def test_the_dag_writes_consistent_metrics_predictions_and_selection(experiments):
    project = experiments.project
    masks = list((project / "data/01_raw/demo/malignant").glob("*_mask.png"))
    assert len(masks) == IMAGES_PER_CLASS
    metrics = json.loads((project / METRICS).read_text())
    predictions = pd.read_csv(project / "data/07_model_output/test_predictions.csv")
    manifest = pd.read_parquet(project / "data/03_primary/manifest.parquet")
    assert metrics["n_test"] == len(predictions) == (manifest["split"] == "test").sum()
    assert 0.0 <= metrics["auroc"] <= 1.0
    assert metrics["accuracy"] == pytest.approx(
        (predictions["label"] == predictions["predicted"]).mean()
    )
    assert not manifest["source_path"].str.contains("_mask").any()
    # Every demo image has its mask (ingestion.mask_pattern), converted beside it.
    stems = manifest["source_path"].str.replace(r"\.\w+$", "", regex=True)
    assert (manifest["mask_path"] == stems + "_mask.png").all()
    assert (project / "data/02_intermediate/images" / manifest["mask_path"].iloc[0]).is_file()
    explanation = metrics["explanation"]
    assert explanation["n"] >= 1 and 0.0 <= explanation["energy_inside"] <= 1.0
    assert set(explanation["per_class"]) <= {"benign", "malignant"}
    assert (project / MODEL).is_file()
    for kind, name in (("onnx", "model.onnx"), ("litert", "model.tflite")):  # checked, shipped
        export = metrics["export"][kind]
        assert export["shipped"] and export["max_abs_diff"] <= 1e-4, export
        assert export["images"] == len(predictions)
        assert (project / "data/06_models/serving_model" / name).stat().st_size == export["bytes"]
    selected = json.loads((project / "data/07_model_output/selected_backbone.json").read_text())
    comparison = pd.read_csv(project / "data/07_model_output/backbone_comparison.csv")
    assert selected["candidate"] == comparison.loc[0, "candidate"]
    assert sorted(comparison["candidate"]) == sorted(CANDIDATES)  # each in its namespace


def test_every_node_logs_its_time_and_memory_and_training_its_history(
    experiments, trained, monkeypatch
):
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    from breast_cancer_pipeline.pipeline_registry import register_pipelines

    client, _, runs = pipeline_runs(experiments)
    repro = {r.data.tags["dvc.stage"]: r for r in runs if "dvc.exp_name" not in r.data.tags}
    monkeypatch.chdir(trained)
    bootstrap_project(trained)
    # The DAG as the flow's runs built it: from the tiny demo configuration.
    with KedroSession.create(project_path=trained, env="demo") as session:
        session.load_context()
        nodes = register_pipelines()["__default__"].nodes
    for node in nodes:
        metrics = repro[node.name.split(".")[0]].data.metrics
        assert metrics[f"node.{node.name}.seconds"] >= 0, node.name
        assert metrics[f"node.{node.name}.peak_rss_mb"] > 0, node.name
    # The workspace holds the experiment's results (its reporting run's test AUROC).
    (reporting,) = [
        r
        for r in runs
        if r.data.tags.get("dvc.exp_name") == EXPERIMENT and r.data.tags["dvc.stage"] == "reporting"
    ]
    metrics = json.loads((experiments.project / METRICS).read_text())
    assert reporting.data.metrics["test.auroc"] == pytest.approx(metrics["auroc"])
    history = client.get_metric_history(repro["finetune"].info.run_id, "finetune.loss")
    assert len(history) == 3  # one phase-1 epoch, two phase-2 epochs


def test_a_stage_alone_retrains_on_the_persisted_outputs(experiments):
    # `dvc exp run` reran `kedro run --pipelines=finetune` alone, on the repro's outputs.
    assert "Running stage 'finetune'" in experiments.output["dvc exp run"]
    assert "Running stage 'backbone_selection'" not in experiments.output["dvc exp run"]
    assert experiments.model_md5 != experiments.baseline_model_md5


def test_inference_scores_a_folder_with_one_good_and_one_bad_file(trained, monkeypatch):
    new = trained / "data/01_raw/new"
    new.mkdir()
    shutil.copy(next((trained / "data/01_raw/demo/benign").glob("*.png")), new / "a.png")
    (new / "broken.png").write_bytes(b"not a png")
    _run(trained, "inference", monkeypatch, {"inference": {"source_dir": str(new)}})
    scored = pd.read_csv(trained / "data/07_model_output/predictions.csv").set_index("path")
    assert scored.loc["a.png", "label"] in {"benign", "malignant", "normal"}
    probabilities = scored.loc["a.png", ["p_benign", "p_malignant", "p_normal"]].to_numpy()
    assert np.isclose(probabilities.astype(float).sum(), 1.0, atol=1e-4)
    assert "broken.png" in scored.loc["broken.png", "error"]


def test_eda_notebook_runs_on_the_catalog(trained, monkeypatch):
    """notebooks/01_eda.ipynb runs top to bottom against the project's catalog."""
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.chdir(trained)
    notebook = nbformat.read(PROJECT / "notebooks" / "01_eda.ipynb", as_version=4)
    NotebookClient(notebook, timeout=300, resources={"metadata": {"path": str(trained)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    assert "images, 3 classes" in text
    assert sum(1 for o in outputs if "image/png" in o.get("data", {})) >= 3
