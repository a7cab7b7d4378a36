"""The project's own parameter defaults for tests: ``conf/base`` merged, nothing retyped.

Tests that call a node directly start from :func:`base_params` and override what they need,
so a test never carries a second copy of a default that could drift from ``conf/base``.
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parents[1]


def load_parameters(project: Path, env: str | None) -> dict[str, Any]:
    """The parameters of ``project``'s ``conf`` for ``env``, loaded as a Kedro run loads them."""
    from kedro.framework.project import settings  # noqa: PLC0415

    from breast_cancer_pipeline import settings as project_settings  # noqa: PLC0415

    loader = settings.CONFIG_LOADER_CLASS(
        conf_source=str(project / "conf"),
        env=env,
        **project_settings.CONFIG_LOADER_ARGS,
    )
    return dict(loader["parameters"])


@cache
def _parameters(env: str | None) -> dict[str, Any]:
    return load_parameters(PROJECT, env)


def _merge(base: dict, overrides: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def base_params(name: str, env: str | None = None, **overrides: Any) -> dict[str, Any]:
    """A deep copy of the ``name`` parameter block from ``conf/base`` (plus ``env``).

    Args:
        name: Top-level key, e.g. ``finetune``.
        env: A configuration environment merged over base (e.g. ``demo``); none by default.
        **overrides: Keys replaced (nested dicts are merged key by key).
    """
    return _merge(_parameters(env)[name], overrides)


def refusal(name: str, **overrides: Any) -> str:
    """The message with which the ``name`` block, overridden so, is refused by its model.

    Fails the test when the block is accepted.
    """
    import pytest  # noqa: PLC0415

    from breast_cancer_pipeline.param_schema import ParameterError, validate_block  # noqa: PLC0415

    with pytest.raises(ParameterError) as info:
        validate_block(name, base_params(name, **overrides))
    return str(info.value)
