"""Project hooks: parameters checked before the first node, and what MLflow receives.

Nodes never talk to MLflow; hooks do:

- :class:`ParameterCheckHook` validates every parameter block the run's nodes read against
  its typed model (:mod:`breast_cancer_pipeline.param_schema`) before any node starts.
- :class:`LiveMetricsHook` logs the figures nodes publish while they run
  (:func:`breast_cancer_pipeline.progress.publish_metrics`: training epochs, search trials) to
  the active MLflow run as they arrive.
  Each finished search trial (:func:`breast_cancer_pipeline.progress.publish_trial`) becomes a
  nested run with the trial's settings as params.
- :class:`NodeResourceHook` logs each node's wall time and peak memory, as
  ``node.<node name>.seconds`` and ``node.<node name>.peak_rss_mb``.
- :class:`LineageHook` tags every run with its git commit, Kedro environment, pipelines, DVC
  stage and experiment, and the manifest's digest (:mod:`breast_cancer_pipeline.lineage`).
- :class:`ChampionHook` gives the model version a run registered its test metrics and model
  card, and moves the ``champion`` alias when the gate passes
  (:mod:`breast_cancer_pipeline.serving.registry`).
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl
from kedro.pipeline import Node, Pipeline

from breast_cancer_pipeline import lineage, memory, param_schema, progress

logger = logging.getLogger(__name__)


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
        memory.reset_peak_rss()
        self._started[node.name] = time.perf_counter()

    @hook_impl
    def after_node_run(self, node: Node) -> None:
        """Stop the clock and log ``node.<name>.seconds`` and ``node.<name>.peak_rss_mb``."""
        started = self._started.pop(node.name, None)
        if started is None:
            return
        figures = {
            f"node.{node.name}.seconds": round(time.perf_counter() - started, 3),
            f"node.{node.name}.peak_rss_mb": round(memory.peak_rss_mb(), 1),
        }
        self.measurements[node.name] = figures
        logger.info(
            "Node %s took %.1f s, peak memory %.0f MiB",
            node.name,
            *figures.values(),
        )
        _log_metrics(figures)


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


def _log_metrics(metrics: Any, step: int = 0) -> None:
    """Log ``metrics`` at ``step`` to the active MLflow run, if there is one."""
    import mlflow  # noqa: PLC0415  (kedro-mlflow has imported it already)

    if mlflow.active_run() is not None:
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=int(step))


def _ms(seconds: float | None) -> int:
    """Seconds since the epoch (None: now) as MLflow's milliseconds."""
    return int(1000 * (time.time() if seconds is None else seconds))


def _log_trial(report: progress.TrialReport) -> None:
    """Log a finished search trial as a run nested in the active one, settings as params."""
    import mlflow  # noqa: PLC0415  (kedro-mlflow has imported it already)
    from mlflow.entities import Metric, Param  # noqa: PLC0415

    parent = mlflow.active_run()
    if parent is None:
        return
    client = mlflow.MlflowClient()
    inherited = client.get_run(parent.info.run_id).data.tags
    tags = {k: v for k, v in inherited.items() if k.startswith(lineage.TAG_PREFIXES)}
    tags |= {
        "mlflow.parentRunId": parent.info.run_id,
        "lineage.kind": "trial",
        "optuna.study": report.study,
        "optuna.trial": str(report.number),
        "optuna.state": report.state,
    }
    run = client.create_run(
        parent.info.experiment_id,
        start_time=_ms(report.started),
        tags=tags,
        run_name=f"trial {report.number}",
    )
    ended = _ms(report.finished)
    client.log_batch(
        run.info.run_id,
        metrics=[Metric(k, float(v), ended, 0) for k, v in report.metrics.items()],
        params=[Param(k, str(v)) for k, v in report.params.items()],
    )
    status = "FINISHED" if report.state == "complete" else "FAILED"
    client.set_terminated(run.info.run_id, status=status, end_time=ended)


class LiveMetricsHook:
    """Logs what nodes publish while they run to MLflow, as it comes.

    Metrics (:func:`~breast_cancer_pipeline.progress.publish_metrics`) go to the active run;
    a node of a cross-validation fold (namespace ``fold_<k>``) logs them under the fold's
    name, ``finetune.val_auc`` as ``finetune.fold_2.val_auc``, so that each fold's learning
    curves stay apart from the others' and the single model's. Search trials
    (:func:`~breast_cancer_pipeline.progress.publish_trial`) become runs nested in it, with
    the lineage tags of the parent. Nodes run one at a time (Kedro's sequential runner).
    """

    def __init__(self) -> None:
        self._fold: str | None = None

    @hook_impl
    def before_pipeline_run(self) -> None:
        """Start listening to the nodes' metrics and trials."""
        progress.add_listener(self._log_metrics)
        progress.add_trial_listener(_log_trial)

    @hook_impl
    def before_node_run(self, node: Node) -> None:
        """Note the fold of the node about to run (None outside cross-validation)."""
        self._fold = fold_of(node.namespace)

    @hook_impl
    def after_pipeline_run(self) -> None:
        """Stop listening."""
        self._stop()

    @hook_impl
    def on_pipeline_error(self) -> None:
        """Stop listening."""
        self._stop()

    def _log_metrics(self, metrics: Any, step: int = 0) -> None:
        _log_metrics({fold_metric(k, self._fold): v for k, v in metrics.items()}, step)

    def _stop(self) -> None:
        progress.remove_listener(self._log_metrics)
        progress.remove_trial_listener(_log_trial)
        self._fold = None


_FOLD_NAMESPACE = re.compile(r"(?:^|\.)(fold_\d+)(?:\.|$)")


def fold_of(namespace: str | None) -> str | None:
    """The cross-validation fold (``fold_<k>``) a node's namespace belongs to, or None."""
    match = _FOLD_NAMESPACE.search(namespace or "")
    return match.group(1) if match else None


def fold_metric(name: str, fold: str | None) -> str:
    """``name`` as a fold logs it: ``finetune.val_auc`` → ``finetune.fold_2.val_auc``."""
    if fold is None:
        return name
    stage, dot, rest = name.partition(".")
    return f"{stage}.{fold}.{rest}" if dot else f"{fold}.{name}"


def _active_run_id() -> str | None:
    import mlflow  # noqa: PLC0415  (kedro-mlflow has imported it already)

    run = mlflow.active_run()
    return run.info.run_id if run else None


def _reads_data(pipeline: Pipeline) -> bool:
    """Whether ``pipeline`` loads any dataset (not only parameters)."""
    return any(not n.startswith("params:") and n != "parameters" for n in pipeline.inputs())


class LineageHook:
    """Tags every MLflow run with where it comes from, and logs the manifest as its dataset.

    The tags (``git.*``, ``kedro.env``, ``kedro.pipelines``, ``dvc.*``, ``lineage.group``,
    ``data.manifest_digest``) are listed in :mod:`breast_cancer_pipeline.lineage`. The
    manifest is the run's input when the run reads data, or its output when the run writes it
    (ingestion; then tagged as the run ends). A run that reads only parameters (``demo_data``)
    has no data digest.
    """

    def __init__(self) -> None:
        self._run_id: str | None = None

    @hook_impl
    def before_pipeline_run(
        self, run_params: dict[str, Any], pipeline: Pipeline, catalog: Any
    ) -> None:
        """Tag the run kedro-mlflow started; log the manifest the run reads."""
        import mlflow  # noqa: PLC0415

        self._run_id = _active_run_id()
        if self._run_id is None:
            return
        from kedro.framework.project import settings  # noqa: PLC0415

        env = run_params.get("env") or settings.CONFIG_LOADER_ARGS["default_run_env"]
        project = Path(run_params["project_path"])
        names = run_params.get("pipeline_names")
        mlflow.set_tags(lineage.run_tags(project, env, names, os.environ))
        if lineage.MANIFEST_DATASET not in pipeline.all_outputs() and _reads_data(pipeline):
            self._log_manifest(catalog, "input")

    @hook_impl(tryfirst=True)  # before kedro-mlflow's, which ends the run
    def after_pipeline_run(self, pipeline: Pipeline, catalog: Any) -> None:
        """Log the manifest the run wrote."""
        if self._run_id is not None and lineage.MANIFEST_DATASET in pipeline.all_outputs():
            self._log_manifest(catalog, "output")

    @staticmethod
    def _log_manifest(catalog: Any, context: str) -> None:
        import mlflow  # noqa: PLC0415

        name = lineage.MANIFEST_DATASET
        if not catalog.exists(name):
            return
        frame = catalog.load(name)
        digest = lineage.frame_digest(frame)
        source = str(getattr(catalog.get(name), "_filepath", name))
        mlflow.set_tag("data.manifest_digest", digest)
        mlflow.log_input(lineage.manifest_dataset(frame, source, digest), context=context)


class ChampionHook:
    """After a run that registered the served model: the version's metrics, card and gate.

    The version gets the test metrics as tags and a description linking the run's model card;
    the ``champion`` alias moves to it only if ``reporting.champion``'s gate passes, and the
    run and the version record why (:func:`breast_cancer_pipeline.serving.record_version`).
    """

    def __init__(self) -> None:
        self._run_id: str | None = None

    @hook_impl
    def before_pipeline_run(self) -> None:
        """Remember the run kedro-mlflow started."""
        self._run_id = _active_run_id()

    @hook_impl(trylast=True)  # after kedro-mlflow's, which logs and registers the model
    def after_pipeline_run(self, pipeline: Pipeline, catalog: Any) -> None:
        """Record the version registered by this run and apply the champion gate."""
        name = getattr(pipeline, "log_model_kwargs", {}).get("registered_model_name")
        if self._run_id is None or not name:
            return
        # The serving package decodes images (pydicom): imported when a run registers a model,
        # not when Kedro loads the project's settings (`kedro registry list`).
        from breast_cancer_pipeline.serving import record_version  # noqa: PLC0415

        rule = catalog.load("params:reporting")["champion"]
        record_version(name, self._run_id, catalog.load("metrics"), rule)
