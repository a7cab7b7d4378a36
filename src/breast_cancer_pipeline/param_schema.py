"""Typed parameters: one pydantic model per pipeline, checked before the first node runs.

Each pipeline that takes ``params:<name>`` keeps its model in
``pipelines/<name>/parameters.py`` as ``SCHEMA`` (a subclass of :class:`Params`). The models
hold **no defaults**: every default is written once, in ``conf/base/parameters_<name>.yml``,
so a key missing from the configuration is an error here rather than a silent code-side value.
Unknown keys are errors too (a typo such as ``finetune.phse1`` is caught before hours of work).
A block that depends on another (``augmentation.tiles.labels: mask`` needs the masks of
``ingestion``; a stain setting needs ``ingestion.color_mode: rgb``) says so in a
``check_against(parameters)`` function beside its ``SCHEMA``, which sees every block
(:func:`problems_across`; it runs once the block itself is valid).

:class:`~breast_cancer_pipeline.hooks.ParameterCheckHook` calls :func:`check_parameters` in
``before_pipeline_run`` for every top-level key the run's nodes read, so
``kedro run --params finetune.phase1.epochs=-1`` fails in seconds, naming the key, the value
and what is allowed. Nodes keep receiving plain dicts.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError


class Params(BaseModel):
    """Base of every parameter model: unknown keys are refused, values are not coerced."""

    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)


class ParameterError(ValueError):
    """One or more parameters are invalid; the message lists each with its key and the fix."""


def _parameters_module(name: str) -> Any:
    """The module ``pipelines/<name>/parameters.py`` (or ``<name>/parameters.py``), or ``None``."""
    for package in ("breast_cancer_pipeline.pipelines", "breast_cancer_pipeline"):
        try:
            return importlib.import_module(f"{package}.{name}.parameters")
        except ModuleNotFoundError as exc:
            if exc.name in (f"{package}.{name}.parameters", f"{package}.{name}"):
                continue
            raise
    return None


def schema_for(name: str) -> type[Params] | None:
    """The model of the top-level parameter block ``name``, or ``None`` when it has none.

    Args:
        name: A top-level parameter key: a pipeline's folder name (``pipelines/<name>/``), or
            a shared subject's package read by several stages (``evaluation/``).
    """
    return getattr(_parameters_module(name), "SCHEMA", None)


def problems_across(name: str, parameters: Mapping[str, Any]) -> list[str]:
    """The problems of block ``name`` with other blocks, by its module's ``check_against``.

    A parameters module may define ``check_against(parameters) -> list[str]`` for rules that
    span blocks (e.g. a stain setting with grayscale images); it runs once ``name`` is valid.
    """
    check = getattr(_parameters_module(name), "check_against", None)
    return check(parameters) if check is not None else []


def _format_error(name: str, error: Mapping[str, Any]) -> str:
    key = ".".join([name, *(str(part) for part in error["loc"])])
    message = str(error["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if error["type"] == "missing":
        return f"{key}: missing; add it to conf/base/parameters_{name}.yml"
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key; remove it or check its spelling"
    return f"{key} = {error.get('input')!r}: {message}"


def validate_block(name: str, value: Any) -> Params | None:
    """Validate one top-level parameter block against its model.

    Args:
        name: The block's key (e.g. ``finetune``).
        value: Its merged value from the configuration.

    Returns:
        The validated model, or ``None`` when the block has no model.

    Raises:
        ParameterError: The block is invalid; one line per problem, each naming the key.
    """
    schema = schema_for(name)
    if schema is None:
        return None
    try:
        return schema.model_validate(value)
    except ValidationError as exc:
        lines = [_format_error(name, e) for e in exc.errors()]
        raise ParameterError(
            f"invalid parameters ({len(lines)}):\n- " + "\n- ".join(lines)
        ) from None


def check_parameters(parameters: Mapping[str, Any], names: Iterable[str]) -> list[str]:
    """Validate the named top-level blocks of the merged parameters, all before failing.

    Args:
        parameters: The merged parameters (``catalog.load("parameters")``).
        names: Top-level keys to check (those the run's nodes read).

    Returns:
        The names that have a model and were checked.

    Raises:
        ParameterError: Any block is invalid or absent; every problem of every block is listed.
    """
    problems: list[str] = []
    checked: list[str] = []
    for name in sorted(set(names)):
        if schema_for(name) is None:
            continue
        checked.append(name)
        if name not in parameters:
            problems.append(f"{name}: missing; add conf/base/parameters_{name}.yml")
            continue
        try:
            validate_block(name, parameters[name])
        except ParameterError as exc:
            problems.extend(str(exc).split("\n- ")[1:])
        else:
            problems.extend(problems_across(name, parameters))
    if problems:
        raise ParameterError(
            f"invalid parameters ({len(problems)}), nothing was run:\n- " + "\n- ".join(problems)
        )
    return checked


def top_level_keys(inputs: Iterable[str]) -> set[str]:
    """The top-level parameter keys among a pipeline's inputs (``params:a.b`` gives ``a``)."""
    return {
        name.removeprefix("params:").split(".")[0] for name in inputs if name.startswith("params:")
    }
