"""Shared fixtures: MLflow never touches the developer's tracking store."""

import os

import pytest


@pytest.fixture(autouse=True)
def isolated_mlflow(tmp_path, monkeypatch):
    """Point MLflow at a throw-away SQLite store and end any run a test left open."""
    for key in [k for k in os.environ if k.startswith("MLFLOW_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    yield
    import sys

    if "mlflow" in sys.modules:
        mlflow = sys.modules["mlflow"]
        while mlflow.active_run() is not None:
            mlflow.end_run()
        # A Kedro session (kedro-mlflow) pins the URIs and the experiment process-wide, over
        # the variable: the next test would write to this test's store.
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
        mlflow.tracking.fluent._active_experiment_id = None


@pytest.fixture(scope="session")
def _mlflow_template(tmp_path_factory):
    """An empty MLflow SQLite store with its tables made (MLflow's migrations take ~7 s)."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow_template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def mlflow_store(isolated_mlflow, _mlflow_template, tmp_path):
    """The test's throw-away store (see ``isolated_mlflow``), its tables made: 0.2 s, not 7 s."""
    import shutil

    shutil.copyfile(_mlflow_template, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"
