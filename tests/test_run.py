"""End to end: the whole DAG in a throw-away copy of the project, on a tiny demo dataset."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

PROJECT = Path(__file__).resolve().parents[1]

TINY = {
    "demo_data": {"images_per_class": 14, "image_size": 64},
    "validation": {"min_per_class": 1},
    "augmentation": {"image_size": 32, "preview": {"rows": 2, "augmented_per_image": 2}},
    "backbone_selection": {"epochs": 2, "repeats": 1, "head_search": {"n_trials": 2, "epochs": 2}},
    "finetune": {"phase1": {"epochs": 1}, "phase2": {"epochs": 2}},
}


def _merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merged[key] = _merge(base[key], value)
        else:
            merged[key] = value
    return merged


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A copy of the project's configuration with a `tiny` env = demo + smaller sizes."""
    root = tmp_path_factory.mktemp("project")
    shutil.copytree(PROJECT / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf" / "local").mkdir()
    (root / "src").mkdir()  # the package itself is installed; Kedro only checks the folder
    shutil.copy(PROJECT / "pyproject.toml", root / "pyproject.toml")
    demo = yaml.safe_load((PROJECT / "conf" / "demo" / "parameters.yml").read_text())
    tiny = root / "conf" / "tiny"
    tiny.mkdir()
    (tiny / "parameters.yml").write_text(yaml.safe_dump(_merge(demo, TINY)))
    return root


def _run(project: Path, pipeline: str, monkeypatch, runtime_params: dict | None = None):
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    monkeypatch.chdir(project)
    monkeypatch.setenv("KEDRO_ENV", "tiny")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")
    bootstrap_project(project)
    with KedroSession.create(project_path=project, env="tiny", runtime_params=runtime_params) as s:
        s.run(pipeline_names=[pipeline])
    import mlflow

    # One run per session, as with one `kedro run` per process.
    while mlflow.active_run() is not None:
        mlflow.end_run()


@pytest.mark.slow
def test_whole_dag_then_stages_alone(project, monkeypatch):
    import mlflow

    _run(project, "demo_data", monkeypatch)
    assert len(list((project / "data/01_raw/demo/malignant").glob("*_mask.png"))) == 14

    _run(project, "__default__", monkeypatch)

    metrics = json.loads((project / "data/08_reporting/metrics.json").read_text())
    predictions = pd.read_csv(project / "data/07_model_output/test_predictions.csv")
    manifest = pd.read_parquet(project / "data/03_primary/manifest.parquet")
    assert metrics["n_test"] == len(predictions) == (manifest["split"] == "test").sum()
    assert 0.0 <= metrics["auroc"] <= 1.0
    assert metrics["accuracy"] == pytest.approx(
        (predictions["label"] == predictions["predicted"]).mean()
    )
    assert not manifest["source_path"].str.contains("_mask").any()
    assert (project / "data/06_models/classifier.keras").is_file()
    selected = json.loads((project / "data/07_model_output/selected_backbone.json").read_text())
    comparison = pd.read_csv(project / "data/07_model_output/backbone_comparison.csv")
    assert selected["candidate"] == comparison.loc[0, "candidate"]
    assert len(comparison) == 3

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["breast_cancer_pipeline"])
    full = runs[runs["tags.mlflow.runName"] == "__default__"].iloc[0]
    from kedro.framework.project import pipelines

    for node in pipelines["__default__"].nodes:
        assert full[f"metrics.node.{node.name}.seconds"] >= 0, node.name
        assert full[f"metrics.node.{node.name}.peak_rss_mb"] > 0, node.name
    assert full["metrics.test.auroc"] == pytest.approx(metrics["auroc"])
    history = mlflow.MlflowClient().get_metric_history(full["run_id"], "finetune.loss")
    assert len(history) == 3  # one phase-1 epoch, two phase-2 epochs

    # A stage alone, on the persisted outputs of the earlier ones.
    model_before = (project / "data/06_models/classifier.keras").stat().st_mtime_ns
    _run(project, "finetune", monkeypatch)
    assert (project / "data/06_models/classifier.keras").stat().st_mtime_ns > model_before

    # Inference on a folder with one good and one bad file.
    new = project / "data/01_raw/new"
    new.mkdir()
    shutil.copy(next((project / "data/01_raw/demo/benign").glob("*.png")), new / "a.png")
    (new / "broken.png").write_bytes(b"not a png")
    _run(project, "inference", monkeypatch, {"inference": {"source_dir": str(new)}})
    scored = pd.read_csv(project / "data/07_model_output/predictions.csv").set_index("path")
    assert scored.loc["a.png", "label"] in {"benign", "malignant", "normal"}
    probabilities = scored.loc["a.png", ["p_benign", "p_malignant", "p_normal"]].to_numpy()
    assert np.isclose(probabilities.astype(float).sum(), 1.0, atol=1e-4)
    assert "broken.png" in scored.loc["broken.png", "error"]


@pytest.mark.slow
def test_eda_notebook_runs_on_the_catalog(project, monkeypatch):
    """notebooks/01_eda.ipynb runs top to bottom against the project's catalog."""
    import nbformat
    from nbclient import NotebookClient

    if not (project / "data/03_primary/manifest.parquet").is_file():
        _run(project, "demo_data", monkeypatch)
        _run(project, "ingestion", monkeypatch)
    monkeypatch.chdir(project)
    notebook = nbformat.read(PROJECT / "notebooks" / "01_eda.ipynb", as_version=4)
    NotebookClient(notebook, timeout=300, resources={"metadata": {"path": str(project)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    assert "images, 3 classes" in text
    assert sum(1 for o in outputs if "image/png" in o.get("data", {})) >= 3
