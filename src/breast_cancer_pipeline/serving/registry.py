"""The model registry: what a new version of the served model carries, and the champion gate.

Every run that ends with the reporting pipeline registers a new version of
``breast-cancer-classifier`` (kedro-mlflow,
:func:`~breast_cancer_pipeline.serving.packaging.with_served_model`). :func:`record_version`
then, from
:class:`~breast_cancer_pipeline.hooks.ChampionHook`:

1. tags the version with the test metrics (``test.<name>``, from ``metrics.json``) and writes
   a description with the main ones and a link to the run's model card;
2. moves the alias ``champion`` to it only when :func:`gate` passes (``reporting.champion``):
   the lower bound of the test ``metric``'s confidence interval reaches ``min_ci_low``, and
   the ``metric`` is not below the current champion's by more than ``max_drop``;
3. records the decision and its reason on the version and the run
   (``champion.decision``: ``promoted`` | ``not promoted``; ``champion.reason``).

Serve ``models:/breast-cancer-classifier@champion``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

#: The alias of the version to serve.
CHAMPION = "champion"
#: The run artifact the description links to (the reporting pipeline's ``model_card``).
MODEL_CARD = "model_card.md"
#: Metrics shown in the version's description (all numeric ones are its tags).
SUMMARY = ("auroc", "auroc_positive", "accuracy", "sensitivity", "specificity", "brier_score")


@dataclass(frozen=True)
class Decision:
    """Whether a version becomes the champion, and why."""

    promote: bool
    reason: str

    @property
    def label(self) -> str:
        """``promoted`` or ``not promoted`` (the ``champion.decision`` tag)."""
        return "promoted" if self.promote else "not promoted"


def _number(value: Any) -> float | None:
    """``value`` as a float, or None when it is missing, not a number or NaN."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def gate(
    metrics: Mapping[str, Any],
    rule: Mapping[str, Any],
    champion: tuple[str, float | None] | None,
) -> Decision:
    """Decide whether a new version replaces the champion.

    Args:
        metrics: The new version's test metrics (``metrics.json``).
        rule: ``reporting.champion``: ``metric``, ``min_ci_low``, ``max_drop``.
        champion: ``(version, its test metric)`` of the current champion (the metric None when
            unknown), or None when there is no champion yet.

    Returns:
        The decision, with a reason that names the figures and the parameters.
    """
    name, floor, drop = rule["metric"], float(rule["min_ci_low"]), float(rule["max_drop"])
    score, low = _number(metrics.get(name)), _number(metrics.get(f"{name}_ci_low"))
    if score is None or low is None:
        return Decision(False, f"test {name} or {name}_ci_low is undefined in metrics.json")
    if low < floor:
        return Decision(
            False,
            f"test {name} {score:.4f}, CI low {low:.4f} < {floor} (reporting.champion.min_ci_low)",
        )
    if champion is None:
        return Decision(True, f"test {name} CI low {low:.4f} >= {floor}; no champion before")
    version, best = champion
    if best is None:
        return Decision(
            True,
            f"test {name} CI low {low:.4f} >= {floor}; champion v{version} "
            f"has no test.{name} to compare with",
        )
    if score < best - drop:
        return Decision(
            False,
            f"test {name} {score:.4f} is more than {drop} below champion v{version}'s "
            f"{best:.4f} (reporting.champion.max_drop)",
        )
    return Decision(
        True,
        f"test {name} {score:.4f} (CI low {low:.4f} >= {floor}) vs champion v{version}'s "
        f"{best:.4f} (max drop {drop})",
    )


def metric_tags(metrics: Mapping[str, Any]) -> dict[str, str]:
    """The numeric test metrics as version tags: ``test.<name>`` (per class ``test.<name>.<c>``)."""
    tags = {}
    for key, value in metrics.items():
        if isinstance(value, Mapping):
            tags.update({f"test.{key}.{c}": str(v) for c, v in value.items() if _number(v)})
        elif not isinstance(value, bool) and _number(value) is not None:
            tags[f"test.{key}"] = str(value)
    return tags


def describe(metrics: Mapping[str, Any], run: Any, card: str | None, decision: Decision) -> str:
    """The version's description (Markdown): main test metrics, model card, gate decision."""
    lines = [
        f"Test split ({metrics.get('n_test', '?')} images, backbone "
        f"{metrics.get('backbone', '?')}):",
        "",
    ]
    for key in SUMMARY:
        value, low, high = (_number(metrics.get(f"{key}{s}")) for s in ("", "_ci_low", "_ci_high"))
        if value is not None:
            interval = f" [{low:.3f}, {high:.3f}]" if low is not None and high is not None else ""
            lines.append(f"- {key}: {value:.3f}{interval}")
    run_id, experiment = run.info.run_id, run.info.experiment_id
    if card:
        lines += [
            "",
            f"Model card: [{card}](#/experiments/{experiment}/runs/{run_id}/"
            f"artifactPath/{card}) (`mlflow artifacts download -u "
            f"runs:/{run_id}/{card}`)",
        ]
    lines += ["", f"Champion gate: {decision.label}: {decision.reason}"]
    return "\n".join(lines)


def _champion(client: Any, name: str, metric: str) -> tuple[str, float | None] | None:
    """``(version, test metric)`` of the current champion, or None."""
    from mlflow.exceptions import MlflowException  # noqa: PLC0415

    try:
        version = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None
    score = _number(version.tags.get(f"test.{metric}"))
    if score is None and version.run_id:  # registered before versions carried their metrics
        score = _number(client.get_run(version.run_id).data.metrics.get(f"test.{metric}"))
    return version.version, score


def record_version(
    name: str, run_id: str, metrics: Mapping[str, Any], rule: Mapping[str, Any]
) -> Decision | None:
    """Tag and describe the version ``run_id`` registered as ``name``; promote it if it passes.

    Args:
        name: The registered model.
        run_id: The MLflow run that logged and registered the version.
        metrics: The run's test metrics (``metrics.json``).
        rule: ``reporting.champion``.

    Returns:
        The gate's decision, or None when the run registered no version of ``name``.
    """
    import mlflow  # noqa: PLC0415

    client = mlflow.MlflowClient()
    versions = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    if not versions:
        logger.warning("Run %s registered no version of %s: no champion decision", run_id, name)
        return None
    version = max(versions, key=lambda v: int(v.version)).version
    decision = gate(metrics, rule, _champion(client, name, rule["metric"]))
    run = client.get_run(run_id)
    card = next((a.path for a in client.list_artifacts(run_id) if a.path == MODEL_CARD), None)
    tags = {
        **metric_tags(metrics),
        "champion.decision": decision.label,
        "champion.reason": decision.reason,
    }
    if card:
        tags["model_card"] = f"runs:/{run_id}/{card}"
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    client.update_model_version(name, version, describe(metrics, run, card, decision))
    if decision.promote:
        client.set_registered_model_alias(name, CHAMPION, version)
    client.set_tag(run_id, "champion.decision", decision.label)
    client.set_tag(run_id, "champion.reason", decision.reason)
    client.set_tag(run_id, "registry.version", f"{name}/{version}")
    logger.info(
        "%s version %s %s as %s: %s", name, version, decision.label, CHAMPION, decision.reason
    )
    return decision
