import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
from kedro.framework.project import pipelines
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro.pipeline import Node, Pipeline

from breast_cancer_pipeline import context as project_context
from breast_cancer_pipeline import progress
from breast_cancer_pipeline.hooks import NodeResourceHook
from breast_cancer_pipeline.param_schema import ParameterError

PROJECT = Path(__file__).resolve().parents[1]
MB = 1024 * 1024


def _sleep():
    time.sleep(0.2)


def _allocate():
    return np.ones(200 * MB, dtype=np.uint8)  # every page written, so resident


def _rss_mb() -> float:
    status = Path("/proc/self/status").read_text()
    return (
        int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])
        / 1024
    )


def _measure(hook: NodeResourceHook, func, name: str) -> dict[str, float]:
    node = Node(func, None, "out", name=name)
    hook.before_node_run(node)
    node.run({})
    hook.after_node_run(node)
    return hook.measurements[name]


def test_seconds_are_the_node_wall_time():
    figures = _measure(NodeResourceHook(), _sleep, "sleep")
    assert 0.2 <= figures["node.sleep.seconds"] < 5


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="per-node peak: Linux")
def test_peak_memory_is_per_node():
    hook = NodeResourceHook()
    before = _rss_mb()
    big = _measure(hook, _allocate, "allocate")["node.allocate.peak_rss_mb"]
    small = _measure(hook, _sleep, "sleep")["node.sleep.peak_rss_mb"]
    assert big >= before + 195  # the 200 MiB array on top of what the process held
    assert small < big - 150  # the high-water mark was reset: the array is gone


def test_figures_reach_the_active_run():
    hook = NodeResourceHook()
    with mlflow.start_run() as run:
        _measure(hook, _sleep, "sleep")
    logged = mlflow.get_run(run.info.run_id).data.metrics
    assert logged == hook.measurements["sleep"]
    assert 0.2 <= logged["node.sleep.seconds"] < 5


def test_without_run_the_hook_only_measures():
    hook = NodeResourceHook()
    _measure(hook, _sleep, "sleep")
    assert set(hook.measurements["sleep"]) == {"node.sleep.seconds", "node.sleep.peak_rss_mb"}


@pytest.fixture
def run_project(monkeypatch):
    """Run a throw-away pipeline in this project's session: settings, hooks, kedro-mlflow."""

    def run(pipeline: Pipeline, runtime_params: dict | None = None) -> None:
        bootstrap_project(PROJECT)
        # Pipelines built by an earlier session of this process would be rebuilt from the
        # new session's configuration (context.use_config_loader), replacing this one.
        monkeypatch.setattr(project_context, "_built_from", None)
        monkeypatch.setattr(pipelines, "_content", {"__default__": pipeline})
        monkeypatch.setattr(pipelines, "_is_data_loaded", True)
        with KedroSession.create(
            project_path=PROJECT, env="demo", runtime_params=runtime_params
        ) as session:
            session.run()
        while mlflow.active_run() is not None:  # one run per session, as in one `kedro run`
            mlflow.end_run()

    yield run
    while mlflow.active_run() is not None:
        mlflow.end_run()


def test_bad_parameters_fail_before_the_first_node(run_project):
    ran = []
    pipeline = Pipeline([Node(ran.append, "params:inference", None, name="score")])

    with pytest.raises(ParameterError, match=r"inference\.batch_size = 0"):
        run_project(pipeline, {"inference": {"batch_size": 0}})

    assert ran == []
    assert progress._listeners == []  # nothing left listening after the failed start


def _publish_loss(params):
    for step in range(3):
        progress.publish_metrics({"toy.loss": 1.0 / (step + 1)}, step=step)
    return params["batch_size"]


def test_published_metrics_reach_the_run_with_their_step(run_project):
    pipeline = Pipeline([Node(_publish_loss, "params:inference", "batch", name="train")])

    run_project(pipeline)

    (run,) = mlflow.search_runs(experiment_names=["breast_cancer_pipeline"], output_format="list")
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "toy.loss")
    assert sorted((m.step, m.value) for m in history) == [(0, 1.0), (1, 0.5), (2, 1 / 3)]
    with mlflow.start_run() as later:  # the listener left with the pipeline
        progress.publish_metrics({"toy.loss": 9.0}, step=9)
    assert "toy.loss" not in mlflow.get_run(later.info.run_id).data.metrics


def _publish_fold_loss(batch):
    progress.publish_metrics({"toy.loss": 0.25}, step=0)
    return batch


def test_a_folds_metrics_are_logged_under_its_name(run_project):
    fold = Pipeline(
        [Node(_publish_fold_loss, "batch", "done", name="train_fold")],
        namespace="fold_2",
        inputs={"batch"},
    )
    pipeline = Pipeline([Node(_publish_loss, "params:inference", "batch", name="train")]) + fold

    run_project(pipeline)

    (run,) = mlflow.search_runs(experiment_names=["breast_cancer_pipeline"], output_format="list")
    client = mlflow.MlflowClient()
    assert [m.value for m in client.get_metric_history(run.info.run_id, "toy.fold_2.loss")] == [
        0.25
    ]
    # The single model's curve holds only its own three steps.
    assert len(client.get_metric_history(run.info.run_id, "toy.loss")) == 3
