"""A team's tracking server (``make services``): PostgreSQL and an MLflow server on it, started by
the test on free ports. A ``kedro run`` tracks there; the served model is registered there, made
champion, and loaded from there as ``make serve`` loads it; two processes run trials of one Optuna
study kept in the same PostgreSQL."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deploy import services as svc
from tests.params import base_params
from tests.pipelines.inference._files import pillow_file
from tests.serving._served import free_port, log_and_register
from tests.whole_dag import LESION_PATIENTS, copy_project, make_tiny

PROJECT = Path(__file__).resolve().parents[2]
EXPERIMENT = "breast_cancer_pipeline"

pytestmark = pytest.mark.skipif(
    svc.postgres_bin() is None,
    reason="PostgreSQL's server programs (initdb, pg_ctl) are not installed: "
    "apt-get install postgresql (.ci/run installs it when absent)",
)


@pytest.fixture(scope="module")
def server() -> Iterator[svc.Services]:
    """PostgreSQL and the MLflow server on free ports, stopped and deleted even on failure."""
    # In the system's temporary folder, which other users may cross: as root, PostgreSQL runs
    # as `postgres`, who cannot enter pytest's private temporary folders.
    root = Path(tempfile.mkdtemp(prefix="services-"))
    root.chmod(0o711)
    services = svc.Services(root, pg_port=free_port(), mlflow_port=free_port())
    try:
        svc.start(services)
        yield services
    finally:
        try:
            svc.stop(services, mode="immediate")
        finally:
            shutil.rmtree(root, ignore_errors=True)


def _rows(server: svc.Services, database: str, table: str) -> int:
    """How many rows ``table`` of ``database`` holds, read straight from PostgreSQL."""
    import psycopg

    with psycopg.connect(
        host=svc.HOST, port=server.pg_port, user=svc.ROLE, dbname=database, passfile=server.pgpass
    ) as connection:
        return connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def _environment(server: svc.Services) -> dict[str, str]:
    """A shell that exported what ``make services`` prints, and nothing else of MLflow's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "KEDRO_"))}
    return {
        **env,
        **server.environment(),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        "KEDRO_DISABLE_TELEMETRY": "true",
    }


def test_a_kedro_run_tracks_to_the_server_and_its_database(server, tmp_path):
    import mlflow

    project = tmp_path / "project"
    project.mkdir()
    copy_project(project)
    make_tiny(project)
    done = subprocess.run(
        ["kedro", "run", "--env=demo", "--pipelines=demo_data"],
        cwd=project,
        env=_environment(server),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]

    client = mlflow.MlflowClient(tracking_uri=server.tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    # Artifacts go through the server to its --artifacts-destination, not to a local path.
    assert experiment.artifact_location.startswith("mlflow-artifacts:")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.tags["lineage.kind"] == "pipeline"
    assert run.data.params["demo_data.lesion_patients_per_class"] == str(LESION_PATIENTS)
    assert _rows(server, "mlflow", "runs") == 1
    assert not (project / "mlflow.db").exists()  # the environment won over conf/base/mlflow.yml


def test_the_model_is_registered_made_champion_and_served_from_the_server(
    server, tmp_path, monkeypatch
):
    import mlflow

    from breast_cancer_pipeline.serving import (
        CHAMPION,
        DEFAULT_MODEL_URI,
        REGISTERED_MODEL_NAME,
        load_served_model,
        record_version,
    )

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.tracking_uri)
    mlflow.set_tracking_uri(server.tracking_uri)
    log_and_register(tmp_path)  # what kedro-mlflow does at the end of a training run
    run_id = mlflow.last_active_run().info.run_id
    metrics = {"auroc": 0.95, "auroc_ci_low": 0.9, "auroc_ci_high": 0.99, "n_test": 30}
    rule = base_params("reporting")["champion"]
    assert record_version(REGISTERED_MODEL_NAME, run_id, metrics, rule).promote  # ChampionHook

    client = mlflow.MlflowClient()
    champion = client.get_model_version_by_alias(REGISTERED_MODEL_NAME, CHAMPION)
    assert (champion.version, champion.run_id) == ("1", run_id)
    assert champion.tags["test.auroc"] == "0.95"
    assert _rows(server, "mlflow", "model_versions") == 1
    assert list(server.artifacts.rglob("MLmodel"))  # stored by the server

    model, info = load_served_model(DEFAULT_MODEL_URI)  # what `make serve` loads
    assert (info.version, info.alias, info.run_id) == ("1", CHAMPION, run_id)
    pixels = np.tile(np.linspace(0, 255, 32, dtype=np.uint8), (32, 1))
    image = base64.b64encode(pillow_file(pixels, "PNG")).decode()
    answer = model.predict(pd.DataFrame({"image": [image], "id": ["case"]})).iloc[0]
    probabilities = [answer[f"p_{name}"] for name in ("benign", "malignant", "normal")]
    assert sum(probabilities) == pytest.approx(1.0, abs=1e-4)


def test_two_processes_run_trials_of_one_study_in_postgresql(server, tmp_path):
    import optuna

    n_trials = 6
    search = {"n_trials": n_trials, "storage": server.database_url("optuna"), "epochs": 3}
    params = base_params("backbone_selection", seed=0, head_search=search)
    outputs = [tmp_path / f"best_{i}.json" for i in range(2)]
    workers = [
        subprocess.Popen(  # the search node with a cheap score in place of training a head
            [sys.executable, "-m", "tests.pipelines.backbone_selection._search_worker"]
            + [json.dumps(params), "0.25", str(out)],
            cwd=PROJECT,
            env=_environment(server),
            start_new_session=True,
        )
        for out in outputs
    ]
    try:
        assert [worker.wait(timeout=180) for worker in workers] == [0, 0]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()

    storage = optuna.storages.RDBStorage(
        search["storage"], engine_kwargs={"connect_args": {"passfile": str(server.pgpass)}}
    )
    (name,) = optuna.get_all_study_names(storage)
    trials = optuna.load_study(study_name=name, storage=storage).get_trials()
    assert {t.state for t in trials} == {optuna.trial.TrialState.COMPLETE}  # none lost
    # Each stops once the study holds n_trials; one may finish the trial it had begun.
    assert n_trials <= len(trials) <= n_trials + 1
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    by_worker = Counter(t.user_attrs["worker"] for t in trials)
    assert len(by_worker) == 2 and sum(by_worker.values()) == len(trials)  # both ran trials
    assert _rows(server, "optuna", "trials") == len(trials)
    best = [json.loads(out.read_text()) for out in outputs]
    assert {b["study"] for b in best} == {name}
    assert max(b["score"] for b in best) == max(t.value for t in trials)
