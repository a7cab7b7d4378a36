"""Nodes of the validation pipeline: check the manifest with Great Expectations, then gate it.

`run_expectations` never fails on bad data: it records what GX found, as results, metrics and
Data Docs. `enforce_gate` then lets the manifest through, or stops the run when an expectation
of severity ``error`` failed, so that no later stage trains or evaluates on leaky or broken data.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse
from urllib.request import url2pathname

import pandas as pd

from breast_cancer_pipeline.templating import render

from .expectations import ALL_CHECKS, Check, Table, build_checks, build_tables, gate_settings

if TYPE_CHECKING:
    from great_expectations.data_context import AbstractDataContext

logger = logging.getLogger(__name__)

MAX_OFFENDING = 10
# Data Docs files that are text; the fonts and raster images GX also copies are left out (the
# pages fall back to other fonts and load their logo from the web).
TEXT_SUFFIXES = frozenset({".html", ".css", ".js", ".json", ".svg"})


class DataValidationError(ValueError):
    """The manifest failed at least one data validation expectation of severity ``error``."""


def run_expectations(
    manifest: pd.DataFrame,
    validation: dict[str, Any],
    ingestion: dict[str, Any],
    masks: pd.DataFrame | None = None,
    augmentation: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, dict[str, float]], dict[str, str], str]:
    """Validates the manifest with Great Expectations; never raises because of the data.

    Args:
        manifest: One row per image, as written by the ingestion pipeline.
        validation: ``params:validation`` (thresholds and one severity per expectation).
        ingestion: ``params:ingestion``; ``split.ratios`` and ``split.val_from_train`` give
            the configured split shares, ``mask_pattern`` and ``csv.mask_column`` whether
            masks are checked.
        masks: Ingestion's mask table (one row per mask file); None: no masks.
        augmentation: ``params:augmentation``; with ``tiles.labels: mask``, every image of
            a lesion class must have a mask.

    Returns:
        ``validation_results``: a JSON-serialisable dict with one entry per expectation (name,
        severity, success, observed value, up to 10 offending rows and paths, description) and
        the skipped expectations.
        ``validation_metrics``: counts of evaluated and failed expectations, in the
        ``MlflowMetricsHistoryDataset`` format.
        ``validation_data_docs``: the GX Data Docs site, relative file path -> file text, with
        ``index.html`` at the top.
        ``validation_report``: a self-contained one-page HTML summary (works offline; see
        :func:`render_validation_report`).

    Raises:
        ValueError: If a parameter is missing or invalid; the message names it.
    """
    settings = gate_settings(validation, ingestion, augmentation)
    tables = build_tables(manifest, settings, masks)
    checks, skipped = build_checks(tables, settings)
    gx_results, data_docs = _run_great_expectations(tables, checks)
    entries = [_summarise(check, gx_results[check.name], tables[check.table]) for check in checks]
    results = {
        "success": not any(_failed(entries, "error")),
        "n_images": len(manifest),
        "evaluated": len(entries),
        "failed": [entry["name"] for entry in _failed(entries)],
        "expectations": entries,
        "skipped": [{"name": name, "reason": reason} for name, reason in skipped.items()],
        "report_path": settings.params.report_path,
    }
    metrics = _metrics(entries)
    logger.info(
        "Validated %d images against %d expectations (%d skipped): %d failed (%d errors).",
        len(manifest),
        len(entries),
        len(skipped),
        len(results["failed"]),
        len(_failed(entries, "error")),
    )
    return results, metrics, data_docs, render_validation_report(results)


def _failed(entries: list[dict[str, Any]], severity: str | None = None) -> list[dict[str, Any]]:
    """The failed entries, of one severity or of any."""
    return [
        entry for entry in entries if not entry["success"] and severity in (None, entry["severity"])
    ]


def _metrics(entries: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Counts of evaluated and failed expectations, for ``MlflowMetricsHistoryDataset``."""
    counts = {
        "evaluated": len(entries),
        "failed": len(_failed(entries)),
        "failed_errors": len(_failed(entries, "error")),
        "failed_warnings": len(_failed(entries, "warning")),
    }
    return {f"validation.{name}": {"value": float(n), "step": 0} for name, n in counts.items()}


def _run_great_expectations(
    tables: Mapping[str, Table], checks: list[Check]
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, str]]:
    """Runs the checks in a throw-away GX project; returns their results and the Data Docs."""
    with tempfile.TemporaryDirectory(prefix="gx_") as project_dir:
        context = _file_context(project_dir)
        gx_results = _validate(context, tables, checks)
        context.build_data_docs()
        return gx_results, _read_data_docs(context)


def enforce_gate(
    manifest: pd.DataFrame,
    validation_results: dict[str, Any],
    validation: dict[str, Any],
) -> pd.DataFrame:
    """Passes the manifest on, or stops the run if an ``error`` expectation failed.

    Args:
        manifest: The manifest that was validated.
        validation_results: The results of `run_expectations`.
        validation: ``params:validation``; ``report_path`` is quoted in messages.

    Returns:
        The manifest, unchanged, for the stages downstream of the gate.

    Raises:
        DataValidationError: If an expectation of severity ``error`` failed. The message lists
            each one with its observed value and up to 10 offending rows/paths, and the path of
            the Data Docs report.
    """
    report = validation["report_path"]
    failed = _failed(validation_results["expectations"])
    errors = _failed(validation_results["expectations"], "error")
    for entry in failed:
        if entry["severity"] == "warning":
            logger.warning("Data validation warning: %s", _describe(entry))

    summary = (
        f"{validation_results['evaluated']} data validation expectations on "
        f"{validation_results['n_images']} images, {len(failed)} failed"
        f"{': ' + ', '.join(entry['name'] for entry in failed) if failed else ''}. "
        f"Report: {report}"
    )
    if errors:
        logger.error(summary)
        details = "\n".join(f"  - {_describe(entry)}" for entry in errors)
        raise DataValidationError(
            f"The manifest failed {len(errors)} data validation expectation(s) of severity "
            f"'error', so the stages after the gate will not run:\n{details}\n"
            f"Report: {report} (open it in a browser). Fix the data, or, for a problem you "
            "accept, set validation.severity.<name>: warning."
        )
    logger.info(summary)
    return manifest


def _file_context(project_dir: str) -> AbstractDataContext:
    """A throw-away file-backed GX context: Data Docs are only built by file contexts."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="file", project_root_dir=project_dir)
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def _validate(
    context: AbstractDataContext, tables: Mapping[str, Table], checks: list[Check]
) -> dict[str, list[dict[str, Any]]]:
    """Runs one suite per table; returns the GX expectation results of each check, as JSON."""
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier

    source = context.data_sources.add_pandas("manifest")
    run_id = RunIdentifier(run_name="validation")
    results: dict[str, list[dict[str, Any]]] = {check.name: [] for check in checks}
    for name, table in tables.items():
        table_checks = [check for check in checks if check.table == name]
        if not table_checks:
            continue
        batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe(name)
        suite = context.suites.add(gx.ExpectationSuite(name=name))
        for check in table_checks:
            for expectation in check.expectations:
                suite.add_expectation(expectation)
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=name, data=batch, suite=suite)
        )
        # COMPLETE with an index column: Data Docs then name the offending rows (paths, hashes).
        result_format: dict[str, Any] = {
            "result_format": "COMPLETE",
            "partial_unexpected_count": MAX_OFFENDING,
        }
        if table.key_column in table.frame.columns:
            result_format["unexpected_index_column_names"] = [table.key_column]
        suite_result = definition.run(
            batch_parameters={"dataframe": table.frame}, result_format=result_format, run_id=run_id
        )
        for result in suite_result.results:
            results[result.expectation_config.meta["check"]].append(result.to_json_dict())
    return results


def _read_data_docs(context: AbstractDataContext) -> dict[str, str]:
    """Reads the local Data Docs site back: relative path -> text, ``index.html`` at the top."""
    (site,) = context.get_docs_sites_urls()
    index = Path(url2pathname(urlparse(site["site_url"]).path))
    return {
        path.relative_to(index.parent).as_posix(): path.read_text(encoding="utf-8")
        for path in sorted(index.parent.rglob("*"))
        if path.is_file() and path.suffix in TEXT_SUFFIXES
    }


def _summarise(check: Check, results: list[dict[str, Any]], table: Table) -> dict[str, Any]:
    """One entry of `validation_results`, from the GX results of the check's expectations."""
    success = all(result["success"] for result in results)
    observed = {}
    rows: list[str] = []
    for result in results:
        config = result["expectation_config"]
        if success or not result["success"]:  # of a failed check, only what failed
            observed[config["kwargs"].get("column", config["type"])] = _observed(result)
        for index in result["result"].get("partial_unexpected_index_list") or []:
            row = _row_key(table, index)
            if row not in rows:
                rows.append(row)
    if table.paths:
        paths = [path for row in rows for path in table.paths.get(row, [])]
    else:
        paths = rows if table.key_column == "path" else []
    counts = [result["result"].get("unexpected_count") for result in results]
    return {
        "name": check.name,
        "severity": check.severity,
        "success": success,
        "description": ALL_CHECKS[check.name],
        "table": check.table,
        "expectation_types": [result["expectation_config"]["type"] for result in results],
        "expected": "; ".join(check.rules),
        "observed_value": next(iter(observed.values())) if len(observed) == 1 else observed,
        "unexpected_count": sum(counts) if all(c is not None for c in counts) else None,
        "offending_rows": [] if table.key_column == "path" else rows[:MAX_OFFENDING],
        "offending_paths": paths[:MAX_OFFENDING],
    }


def _observed(result: dict[str, Any]) -> Any:
    """What GX observed, in a form short enough for a log line."""
    message = _exception_message(result.get("exception_info") or {})
    if message:
        return {"exception": message}
    details = result["result"]
    if "observed_value" in details:
        if "details" in details:
            return {"observed_value": details["observed_value"], **details["details"]}
        return details["observed_value"]
    if "unexpected_count" in details:
        return {
            "unexpected_count": details["unexpected_count"],
            "element_count": details["element_count"],
            "unexpected_values": details.get("partial_unexpected_list", [])[:MAX_OFFENDING],
        }
    return None


def _exception_message(info: dict[str, Any]) -> str | None:
    """The exception GX caught while evaluating an expectation (e.g. a missing column)."""
    if info.get("raised_exception"):
        return info.get("exception_message")
    for value in info.values():
        if isinstance(value, dict) and value.get("raised_exception"):
            return value.get("exception_message")
    return None


def _row_key(table: Table, index: dict[str, Any] | int) -> str:
    """Names an offending row: GX gives its key column's value, or its index without one."""
    key = index.get(table.key_column) if isinstance(index, dict) else None
    if key is None or (isinstance(key, float) and math.isnan(key)):
        return f"row {index if isinstance(index, int) else '?'} (no {table.key_column})"
    return str(key)


def _describe(entry: dict[str, Any]) -> str:
    """One failed expectation, for logs and errors."""
    text = (
        f"{entry['name']} [{entry['severity']}]: {entry['description']} "
        f"Expected: {entry['expected']}. Observed: {json.dumps(entry['observed_value'])}."
    )
    if entry["offending_rows"]:
        text += f" Offending rows: {', '.join(entry['offending_rows'])}."
    if entry["offending_paths"]:
        text += f" Offending paths: {', '.join(entry['offending_paths'])}."
    return text


def render_validation_report(validation_results: dict[str, Any]) -> str:
    """A one-page, self-contained HTML summary of the validation results.

    Unlike great-expectations' Data Docs, it needs no JavaScript or network access, so it
    opens on an offline workstation. Rendered from ``templates/validation_report.html.j2``,
    which escapes every value (labels and paths come from the user's data).

    Args:
        validation_results: The results of `run_expectations`.

    Returns:
        The HTML page.
    """
    entries = validation_results["expectations"]
    n_failed, n_errors = len(_failed(entries)), len(_failed(entries, "error"))
    status = "failed" if n_errors else ("passed with warnings" if n_failed else "passed")
    rows = [
        {
            "name": entry["name"],
            "severity": entry["severity"],
            "result": _RESULTS[entry["success"] or entry["severity"]],
            "description": entry["description"],
            "expected": entry["expected"],
            "observed": _short(entry["observed_value"]),
            "offenders": (entry["offending_paths"] or entry["offending_rows"])[:MAX_OFFENDING],
        }
        for entry in entries
    ]
    return render(
        "validation_report.html.j2",
        status=status,
        status_class="fail" if n_errors else ("warn" if n_failed else "pass"),
        n_images=validation_results["n_images"],
        evaluated=validation_results["evaluated"],
        n_failed=n_failed,
        n_errors=n_errors,
        rows=rows,
        skipped=validation_results["skipped"],
        max_offending=MAX_OFFENDING,
    )


#: How a check's outcome is shown: (CSS class, text), by success or by failed severity.
_RESULTS = {True: ("pass", "passed"), "error": ("fail", "FAILED"), "warning": ("warn", "warning")}


def _short(value: Any, limit: int = 300) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 1] + "…"
