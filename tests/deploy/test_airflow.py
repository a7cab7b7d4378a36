"""The DAG on Airflow: one task per stage, every dataset between stages persisted, and (with
``AIRFLOW_DAG_TEST=1``, as ``make airflow-test`` runs it) ``airflow dags test`` of the DAG that
``kedro airflow create`` generates, in Airflow's own environment, on a tiny configuration."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from breast_cancer_pipeline import context as project_context
from breast_cancer_pipeline.pipeline_registry import TRAINING_STAGES
from tests.test_telemetry import GUARD
from tests.whole_dag import copy_project, make_tiny

PROJECT = Path(__file__).resolve().parents[2]
AIRFLOW_BIN = PROJECT / "deploy/airflow/.venv/bin"
TEMPLATE = PROJECT / "deploy/airflow/dag_template.j2"
DAG_ID = "breast-cancer-pipeline"
#: The project's tools' usage data off, as `make` exports them (docs: "Telemetry"). Airflow 3.3
#: collects none (2.10's Scarf switch is gone); the network guard checks that nothing leaves.
QUIET = {
    "DO_NOT_TRACK": "true",
    "KEDRO_DISABLE_TELEMETRY": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}


@pytest.fixture
def restore_build_config(monkeypatch):
    """The configuration the pipelines are built from is the process's: restored afterwards."""
    monkeypatch.delenv("KEDRO_ENV", raising=False)
    monkeypatch.setattr(project_context, "_active_loader", project_context._active_loader)
    monkeypatch.setattr(project_context, "_built_from", project_context._built_from)


def _crossing_datasets(pipeline) -> dict[str, tuple[str, str]]:
    """Datasets one stage writes and another reads: name → (writer, a reader)."""
    writer = {
        name: node.namespace.split(".")[0] for node in pipeline.nodes for name in node.outputs
    }
    crossing = {}
    for node in pipeline.nodes:
        stage = node.namespace.split(".")[0]
        for name in node.inputs:
            if name in writer and writer[name] != stage:
                crossing[name] = (writer[name], stage)
    return crossing


@pytest.mark.parametrize("env", [None, "demo"])
@pytest.mark.usefixtures("restore_build_config")
def test_every_dataset_between_stages_is_persisted(env):
    """So each stage can run on its own machine (an Airflow task, a DVC stage)."""
    from kedro.framework.project import pipelines
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project
    from kedro.io import MemoryDataset

    bootstrap_project(PROJECT)
    with KedroSession.create(project_path=PROJECT, env=env) as session:
        catalog = session.load_context().catalog
        pipeline = pipelines["__default__"]
    # One task per stage: the namespaces are the training stages, nothing outside them.
    assert {node.namespace.split(".")[0] for node in pipeline.nodes if node.namespace} == set(
        TRAINING_STAGES
    )
    assert all(node.namespace for node in pipeline.nodes)
    crossing = _crossing_datasets(pipeline)
    assert {"manifest", "model_input", "classifier", "best_head"} <= set(crossing)
    # A name the catalog does not declare (get: None) is kept in memory at run time too.
    in_memory = {
        name: stages
        for name, stages in crossing.items()
        if catalog.get(name) is None or isinstance(catalog.get(name), MemoryDataset)
    }
    assert not in_memory, f"datasets between stages kept in memory (writer, reader): {in_memory}"


def test_the_airflow_environment_s_lock_is_current():
    """Its lock holds the project's requirements too: a new dependency needs a new lock."""
    uv = Path(sys.executable).parent / "uv"
    command = [uv, "lock", "--check", "--offline", "--project", PROJECT / "deploy/airflow"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"run `uv lock --project deploy/airflow`:\n{done.stderr[-2000:]}"


def _airflow_env(root: Path, project: Path) -> dict[str, str]:
    """Airflow's environment first on PATH, its home and DAGs in ``root``, every Python process
    under the network guard of ``tests/test_telemetry.py``."""
    own = ("MLFLOW_", "KEDRO_", "AIRFLOW")
    env = {k: v for k, v in os.environ.items() if not k.startswith(own)}
    guard = root / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(GUARD)
    return {
        **env,
        **QUIET,
        "PYTHONPATH": str(guard),
        "NETWORK_GUARD_LOG": str(root / "network.log"),
        "PATH": f"{AIRFLOW_BIN}{os.pathsep}{env.get('PATH', '')}",
        "AIRFLOW_HOME": str(root / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "BREAST_CANCER_PIPELINE_PATH": str(project),
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
    }


@pytest.mark.skipif(
    os.environ.get("AIRFLOW_DAG_TEST") != "1",
    reason="`make airflow-test` runs it (Airflow's own environment; minutes)",
)
def test_airflow_runs_every_stage_of_the_generated_dag(tmp_path):
    assert (AIRFLOW_BIN / "airflow").exists(), "build it first: make airflow-test"
    project = tmp_path / "project"
    project.mkdir()
    copy_project(project)
    make_tiny(project)
    env = _airflow_env(tmp_path, project)
    seconds = {}

    def run(step: str, *command: str) -> str:
        started = time.perf_counter()
        done = subprocess.run(
            command, cwd=project, env=env, capture_output=True, text=True, timeout=1800, check=False
        )
        seconds[step] = round(time.perf_counter() - started, 1)
        assert done.returncode == 0, f"{step}:\n{(done.stdout + done.stderr)[-6000:]}"
        return done.stdout + done.stderr

    run("demo data", "kedro", "run", "--env=demo", "--pipelines=demo_data")
    run(
        "kedro airflow create",
        *("kedro", "airflow", "create", "--env=demo", "--group-by=namespace"),
        *(f"--jinja-file={TEMPLATE}", f"--target-dir={tmp_path / 'dags'}"),
    )
    dag = (tmp_path / "dags/breast_cancer_pipeline_demo_dag.py").read_text()
    tasks = re.findall(r'_run_kedro_stage\("(\w+)"\)', dag)
    assert sorted(tasks) == sorted(TRAINING_STAGES)
    assert 'tasks["finetune"] >> tasks["reporting"]' in dag
    run("airflow db migrate", "airflow", "db", "migrate")
    output = run("airflow dags test", "airflow", "dags", "test", DAG_ID)
    print(f"seconds per step: {json.dumps(seconds)}")

    with sqlite3.connect(tmp_path / "airflow/airflow.db") as db:
        states = dict(db.execute("SELECT task_id, state FROM task_instance").fetchall())
    assert states == {task.replace("_", "-"): "success" for task in TRAINING_STAGES}, output[-4000:]
    assert (project / "data/08_reporting/metrics.json").exists()
    _assert_tracked(tmp_path / "mlflow.db")
    network = tmp_path / "network.log"
    assert not network.exists() or not network.read_text(), network.read_text()


def _assert_tracked(database: Path) -> None:
    """One MLflow run per task; reporting's registered the model and moved @champion."""
    import mlflow

    from breast_cancer_pipeline.serving import CHAMPION, REGISTERED_MODEL_NAME

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{database}")
    experiment = client.get_experiment_by_name("breast_cancer_pipeline")
    runs = client.search_runs(
        [experiment.experiment_id], filter_string="tags.`lineage.kind` = 'pipeline'"
    )
    # The demo data's run (before the DAG), then one per task, named after its stage.
    assert sorted(run.info.run_name for run in runs) == sorted(["demo_data", *TRAINING_STAGES])
    champion = client.get_model_version_by_alias(REGISTERED_MODEL_NAME, CHAMPION)
    by_stage = {run.info.run_name: run.info.run_id for run in runs}
    assert (str(champion.version), champion.run_id) == ("1", by_stage["reporting"])
