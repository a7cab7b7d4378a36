"""The head search's persisted study: resume after a kill, one study per setup, several workers,
and each trial a nested MLflow run with its settings as params."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import optuna
import pytest

from breast_cancer_pipeline import param_schema
from breast_cancer_pipeline.hooks import LiveMetricsHook
from breast_cancer_pipeline.param_schema import ParameterError
from breast_cancer_pipeline.pipelines.backbone_selection import nodes
from tests.params import base_params
from tests.pipelines.backbone_selection import _search_worker as worker

PROJECT = Path(__file__).resolve().parents[3]
SELECTED = {"candidate": "small", "score": 0.5}


def _params(storage: str | None, n_trials: int, **search) -> dict:
    return base_params(
        "backbone_selection",
        seed=0,
        head_search={"n_trials": n_trials, "storage": storage, "epochs": 3, **search},
    )


@pytest.fixture
def storage(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'optuna.db'}"


@pytest.fixture
def calls(monkeypatch) -> list[dict]:
    """Replace the head training by :func:`worker.score`; records each head trained here."""
    heads = []

    def fit_head(features, head, epochs, seed, predict_batch_size, steps_per_execution):
        heads.append(head)
        return {"val_auroc": worker.score(head), "val_accuracy": 0.5}

    monkeypatch.setattr(nodes, "fit_head", fit_head)
    return heads


def _search(params: dict, features: dict | None = None) -> dict:
    best, _ = nodes.search_head(SELECTED, params, small=features or worker.features())
    return best


def _completed(storage: str) -> list[optuna.trial.FrozenTrial]:
    """The completed trials of the one study in ``storage``."""
    (name,) = optuna.get_all_study_names(storage)
    study = optuna.load_study(study_name=name, storage=storage)
    return study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))


def _worker(params: dict, delay: float, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.pipelines.backbone_selection._search_worker"]
        + [json.dumps(params), str(delay), str(out)],
        cwd=PROJECT,
        start_new_session=True,
    )


def test_a_finished_study_is_loaded_and_extended_to_the_new_total(storage, calls):
    first = _search(_params(storage, 3))
    assert len(calls) == 3 and first["n_trials"] == 3
    assert first["study"].startswith("head_search-")
    again = _search(_params(storage, 3))
    assert len(calls) == 3  # nothing left to run: the stored best comes back
    assert again == first
    extended = _search(_params(storage, 5))
    assert len(calls) == 5 and extended["n_trials"] == 5
    assert extended["score"] >= first["score"]
    assert len(_completed(storage)) == 5


def test_a_killed_search_resumes_with_the_missing_trials_only(storage, calls, tmp_path):
    params = _params(storage, 6)
    process = _worker(params, delay=0.4, out=tmp_path / "best.json")
    deadline = time.monotonic() + 120
    while not (Path(storage.removeprefix("sqlite:///")).exists() and _safe_count(storage) >= 2):
        assert process.poll() is None and time.monotonic() < deadline, "the worker did not start"
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)  # mid-trial: that trial stays RUNNING, unfinished
    process.wait(timeout=30)
    done = len(_completed(storage))
    assert 2 <= done < 6

    best = _search(params)

    assert len(calls) == 6 - done
    assert best["n_trials"] == len(_completed(storage)) == 6


def _safe_count(storage: str) -> int:
    from sqlalchemy.exc import IntegrityError, OperationalError

    try:
        return len(_completed(storage))
    # The study (or its schema) is not created yet, or this reader and the worker both
    # stamped the new schema's version at once (IntegrityError): look again later.
    except (ValueError, OperationalError, IntegrityError):
        return 0


def test_a_changed_setup_starts_its_own_study(storage, calls):
    first = _search(_params(storage, 2))
    other_epochs = _search(_params(storage, 2, epochs=4))
    features = worker.features()
    features["features_val"] = features["features_val"] + 1.0
    other_features = _search(_params(storage, 2), features)
    names = {first["study"], other_epochs["study"], other_features["study"]}
    assert len(names) == 3
    assert set(optuna.get_all_study_names(storage)) == names
    assert len(calls) == 6  # none resumed another's trials


def test_an_existing_study_is_refused_without_load_if_exists(storage, calls):
    _search(_params(storage, 1))
    with pytest.raises(ValueError, match=r"already exists .*load_if_exists is false"):
        _search(_params(storage, 2, load_if_exists=False))


def test_two_processes_share_one_study_and_stop_at_n_trials(storage, tmp_path):
    n_trials = 6
    params = _params(storage, n_trials)
    files = [tmp_path / f"best_{i}.json" for i in range(2)]
    workers = [_worker(params, delay=0.25, out=file) for file in files]
    assert [p.wait(timeout=180) for p in workers] == [0, 0]
    outputs = [json.loads(file.read_text()) for file in files]

    trials = _completed(storage)
    # Each worker stops once the study holds n_trials; one may finish the trial it had begun.
    assert n_trials <= len(trials) <= n_trials + 1
    assert len({t.number for t in trials}) == len(trials)
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both ran trials
    assert {o["study"] for o in outputs} == set(optuna.get_all_study_names(storage))
    assert max(o["score"] for o in outputs) == max(t.value for t in trials)


@pytest.mark.usefixtures("mlflow_store")
def test_each_trial_is_a_nested_run_with_its_settings_as_params(calls):
    hook = LiveMetricsHook()
    hook.before_pipeline_run()
    try:
        with mlflow.start_run() as parent:
            best = _search(_params(None, 3))
    finally:
        hook.after_pipeline_run()
    client = mlflow.MlflowClient()
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
    )
    assert len(children) == 3
    by_number = {int(r.data.tags["optuna.trial"]): r for r in children}
    assert sorted(by_number) == [0, 1, 2]
    trial = by_number[best["trial"]]
    assert trial.info.status == "FINISHED"
    assert trial.data.params["dropout"] == str(best["dropout"])
    assert trial.data.params["batch_size"] == str(best["batch_size"])
    assert trial.data.metrics == {"head_search.val_auroc": best["score"]}
    assert trial.data.tags["optuna.study"] == best["study"]
    parent_metrics = client.get_run(parent.info.run_id).data.metrics
    assert "head_search.val_auroc" in parent_metrics  # the live curve stays on the parent
    assert not any(k.startswith("head_search.dropout") for k in parent_metrics)


def test_storage_must_be_a_database_url_or_null():
    block = base_params("backbone_selection")
    assert block["head_search"]["storage"] == "sqlite:///optuna.db"
    param_schema.validate_block("backbone_selection", {**block})
    block["head_search"] = {**block["head_search"], "storage": None}
    param_schema.validate_block("backbone_selection", block)
    block["head_search"] = {**block["head_search"], "storage": "optuna.db"}
    with pytest.raises(
        ParameterError, match=r"head_search\.storage = 'optuna\.db': must be a database URL"
    ):
        param_schema.validate_block("backbone_selection", block)


def test_a_worker_losing_the_race_to_create_postgresql_types_retries(monkeypatch):
    """PostgreSQL refuses the loser's ``CREATE TYPE`` (DuplicateObject, a ProgrammingError)."""
    from sqlalchemy.exc import ProgrammingError

    from breast_cancer_pipeline.pipelines.backbone_selection import study

    attempts = []

    def storage(url, engine_kwargs):
        attempts.append(url)
        if len(attempts) == 1:
            raise ProgrammingError("CREATE TYPE studydirection", {}, Exception("exists"))
        return "storage"

    monkeypatch.setattr(optuna.storages, "RDBStorage", storage)
    monkeypatch.setattr(study.time, "sleep", lambda seconds: None)
    assert study._storage("postgresql://127.0.0.1/optuna") == "storage"
    assert len(attempts) == 2
