import mlflow
from kedro.pipeline import Node

from breast_cancer_pipeline.hooks import NodeResourceHook


def _allocate():
    return bytearray(64 * 1024 * 1024)


def test_hook_logs_seconds_and_peak_memory_to_the_active_run():
    hook = NodeResourceHook()
    node = Node(_allocate, None, "out", name="allocate")
    with mlflow.start_run() as run:
        hook.before_node_run(node)
        node.run({})
        hook.after_node_run(node)
    logged = mlflow.get_run(run.info.run_id).data.metrics
    assert logged["node.allocate.seconds"] >= 0
    assert logged["node.allocate.peak_rss_mb"] >= 64


def test_hook_without_run_only_measures():
    hook = NodeResourceHook()
    node = Node(_allocate, None, "out", name="allocate")
    hook.before_node_run(node)
    hook.after_node_run(node)
    assert set(hook.measurements["allocate"]) == {
        "node.allocate.seconds",
        "node.allocate.peak_rss_mb",
    }
