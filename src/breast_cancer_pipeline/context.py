"""The project's Kedro context: the pipelines are built from the configuration of the run.

Part of the DAG comes from parameters (one namespaced copy of backbone selection per
``backbone_selection.candidates`` entry), so it must be built from the configuration the run
uses: ``conf/base`` merged with the run's environment (``--env``, else ``KEDRO_ENV``) and its
``--params``. Kedro builds the pipelines lazily, on first access, and every session creates its
context before that: ``kedro run`` (``KedroSession.run``), ``kedro viz run --env X`` and
``kedro viz build``, ``kedro ipython``. :class:`ProjectContext` records its config loader when
it is created, and the pipelines read their parameters with :func:`run_parameters`.

A context class rather than an ``after_context_created`` hook: kedro-viz replaces the session's
hook manager by a null one (unless ``--include-hooks``), so a hook never hears of the
environment ``kedro viz run --env X`` draws.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kedro.config import AbstractConfigLoader
from kedro.framework.context import KedroContext

#: The config loader of the context created last in this process (None before any session).
_active_loader: AbstractConfigLoader | None = None
#: The config loader the registered pipelines were built from (None until they are built).
_built_from: AbstractConfigLoader | None = None
#: The merged parameters and the loader they were read from: a loader reads and merges its
#: files on every access, and several stages' wiring asks for them.
_read: tuple[AbstractConfigLoader, dict[str, Any]] | None = None
#: The loader without a session, and what it was made for (project, environment, files).
_sessionless: tuple[tuple, AbstractConfigLoader] | None = None


class ProjectContext(KedroContext):
    """Kedro's context, which makes its configuration the one the pipelines are built from."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Create Kedro's context, then record its config loader for :func:`run_parameters`."""
        super().__init__(*args, **kwargs)
        use_config_loader(self.config_loader)


def use_config_loader(loader: AbstractConfigLoader) -> None:
    """Build the pipelines from ``loader`` from now on.

    Pipelines built earlier in this process from another configuration (an earlier session)
    are dropped, so the next access builds them again from ``loader``.

    Args:
        loader: The config loader of the session's context.
    """
    global _active_loader  # noqa: PLW0603
    _active_loader = loader
    if _built_from is not None and _built_from is not loader:
        from kedro.framework.project import pipelines  # noqa: PLC0415

        pipelines.configure(f"{__package__}.pipeline_registry")


def run_parameters() -> dict[str, Any]:
    """The parameters of the run whose pipelines are being built.

    Those of the session's context; without a session (``kedro registry list``, a script that
    calls ``create_pipeline()``), ``conf/base`` merged with the environment in ``KEDRO_ENV``, as
    a session would read them.

    Returns:
        The merged parameters.
    """
    global _built_from, _read  # noqa: PLW0603
    # Not `or`: a config loader is a mapping, empty (falsy) until a key is read.
    loader = _active_loader if _active_loader is not None else _loader_without_session()
    _built_from = loader
    if _read is None or _read[0] is not loader:
        _read = (loader, loader["parameters"])
    return _read[1]


def _loader_without_session() -> AbstractConfigLoader:
    """The config loader a session started here would use: the same one while its files stay.

    Raises:
        RuntimeError: The working directory is not inside a Kedro project.
    """
    global _sessionless  # noqa: PLW0603
    from kedro.framework.project import settings  # noqa: PLC0415
    from kedro.utils import find_kedro_project  # noqa: PLC0415

    project = find_kedro_project(Path.cwd())
    if project is None:
        raise RuntimeError(f"{Path.cwd()} is not in a Kedro project: run kedro from the project")
    conf, env = project / settings.CONF_SOURCE, os.environ.get("KEDRO_ENV")
    files = sorted((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in conf.rglob("*.yml"))
    key = (str(conf), env, tuple(files))
    if _sessionless is None or _sessionless[0] != key:
        loader = settings.CONFIG_LOADER_CLASS(
            conf_source=str(conf), env=env, **settings.CONFIG_LOADER_ARGS
        )
        _sessionless = (key, loader)
    return _sessionless[1]
