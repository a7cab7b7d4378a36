"""Shared fixtures: MLflow never touches the developer's tracking store."""

import os

import pytest

try:  # pytest-xdist (a dev dependency) runs `make test` on several workers
    from xdist.scheduler import LoadScopeScheduling
except ImportError:  # pragma: no cover
    LoadScopeScheduling = None


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


#: Test modules that share one expensive session fixture: xdist runs them on one worker.
SHARED_FLOW_MODULES = ("tests/test_run.py", "tests/test_experiments.py")


class _ModuleScheduling(LoadScopeScheduling if LoadScopeScheduling else object):
    """xdist's per-module scheduling, with the modules of the whole-DAG flow as one unit."""

    def _split_scope(self, nodeid: str) -> str:
        module = nodeid.split("::", 1)[0]
        return "whole-DAG flow" if module in SHARED_FLOW_MODULES else module


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """``make test`` (``pytest -n 3``): each module's tests on one worker.

    So a module-scoped fixture (a trained tiny model, a served one) is built once, not once per
    worker, and the whole-DAG flow (:mod:`tests.whole_dag`) once for both its modules.
    """
    return _ModuleScheduling(config, log)


def pytest_collection_modifyitems(config, items):
    """Under xdist, the whole-DAG flow's modules first: the longest unit starts at once."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    items.sort(key=lambda item: item.nodeid.split("::", 1)[0] not in SHARED_FLOW_MODULES)
