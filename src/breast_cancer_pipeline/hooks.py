"""Project hooks: parameters checked before the first node, and what MLflow receives.

Nodes never talk to MLflow; hooks do:

- :class:`ParameterCheckHook` validates every parameter block the run's nodes read against
  its typed model (:mod:`breast_cancer_pipeline.param_schema`) before any node starts.
- :class:`LiveMetricsHook` logs the figures nodes publish while they run
  (:func:`breast_cancer_pipeline.progress.publish_metrics`: training epochs, search trials) to
  the active MLflow run as they arrive.
- :class:`NodeResourceHook` logs each node's wall time and peak memory, as
  ``node.<node name>.seconds`` and ``node.<node name>.peak_rss_mb``.
"""

from __future__ import annotations

import logging
import resource
import sys
import time
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl
from kedro.pipeline import Node, Pipeline

from breast_cancer_pipeline import param_schema, progress

logger = logging.getLogger(__name__)

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def _reset_peak_rss() -> bool:
    """Reset the kernel's high-water mark of this process's resident memory (Linux only)."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def _peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB since the last reset (or since start)."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


class NodeResourceHook:
    """Measures each node's wall time and peak resident memory and logs them to MLflow.

    The peak is per node on Linux (the kernel's high-water mark is reset before each node);
    elsewhere it is the process's peak so far. With ``ParallelRunner`` each worker process
    measures its own nodes.
    """

    def __init__(self) -> None:
        self._started: dict[str, float] = {}
        self.measurements: dict[str, dict[str, float]] = {}

    @hook_impl
    def before_node_run(self, node: Node) -> None:
        """Start the clock and reset the memory high-water mark."""
        _reset_peak_rss()
        self._started[node.name] = time.perf_counter()

    @hook_impl
    def after_node_run(self, node: Node) -> None:
        """Stop the clock and log ``node.<name>.seconds`` and ``node.<name>.peak_rss_mb``."""
        started = self._started.pop(node.name, None)
        if started is None:
            return
        figures = {
            f"node.{node.name}.seconds": round(time.perf_counter() - started, 3),
            f"node.{node.name}.peak_rss_mb": round(_peak_rss_mb(), 1),
        }
        self.measurements[node.name] = figures
        logger.info(
            "Node %s took %.1f s, peak memory %.0f MiB",
            node.name,
            *figures.values(),
        )
        self._log_to_mlflow(figures)

    @staticmethod
    def _log_to_mlflow(figures: dict[str, Any]) -> None:
        import mlflow  # noqa: PLC0415  (kedro-mlflow has imported it already)

        if mlflow.active_run() is None:
            return
        mlflow.log_metrics(figures)


class ParameterCheckHook:
    """Checks the parameters of every stage a run is about to run, before its first node.

    Raises :class:`~breast_cancer_pipeline.param_schema.ParameterError` listing every invalid
    key (with its value and what is allowed) of every block the run's nodes read.
    """

    @hook_impl
    def before_pipeline_run(
        self, run_params: dict[str, Any], pipeline: Pipeline, catalog: Any
    ) -> None:
        """Validate the parameter blocks read by ``pipeline``'s nodes."""
        names = param_schema.top_level_keys(pipeline.inputs())
        if not names:
            return
        checked = param_schema.check_parameters(catalog.load("parameters"), names)
        logger.info("Parameters checked: %s", ", ".join(checked) or "none with a schema")


def _log_live_metrics(metrics: Any, step: int) -> None:
    import mlflow  # noqa: PLC0415  (kedro-mlflow has imported it already)

    if mlflow.active_run() is not None:
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=int(step))


class LiveMetricsHook:
    """Logs the metrics nodes publish while they run to the active MLflow run, as they come."""

    @hook_impl
    def before_pipeline_run(self) -> None:
        """Start listening to :func:`~breast_cancer_pipeline.progress.publish_metrics`."""
        progress.add_listener(_log_live_metrics)

    @hook_impl
    def after_pipeline_run(self) -> None:
        """Stop listening."""
        progress.remove_listener(_log_live_metrics)

    @hook_impl
    def on_pipeline_error(self) -> None:
        """Stop listening."""
        progress.remove_listener(_log_live_metrics)
