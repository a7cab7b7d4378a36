"""The project's model server: MLflow's ``/invocations`` and a page to try the model.

One process, one port (``PORT``, default 5001), the registered model
``breast-cancer-classifier@champion`` unless ``MODEL_URI`` says otherwise:

* ``POST /invocations``, ``GET /ping``, ``/health``, ``/version``: MLflow's own scoring app
  (:func:`mlflow.pyfunc.scoring_server.init`, what ``mlflow models serve`` runs), so requests
  and responses are exactly those of ``mlflow models serve``; behind
  :func:`~breast_cancer_pipeline.serving.front_door.front_door`, which checks the Host, the
  content type, the body's size (``inference.serving.max_request_bytes``: an HTTP 413 before
  it is read) and its rows before MLflow sees the request;
* ``GET /``: a page where a user drops an image file. Its script (``static/page.js``) sends the
  file base64-encoded to ``/invocations`` with ``explain`` true and shows the answer: the
  model decodes and preprocesses, the page never does;
* ``GET /model``: the model's name, version, alias, URI, run, intended-use line and
  operating thresholds (JSON).

Everything the page loads comes from this server (a ``Content-Security-Policy`` of ``'self'``
forbids anything else): it works offline. Run ``python -m breast_cancer_pipeline.serving``, or
``make serve`` (``PORT=8000 make serve``, ``MODEL_URI=models:/breast-cancer-classifier/3 make
serve``, ``HOST=0.0.0.0`` to listen beyond this machine, ``RUNTIME=onnxruntime`` to run the
packaged ``model.onnx`` on ONNX Runtime: :func:`~.runtime.use_runtime`). ``MODEL_URI`` may be
a model folder on disk (the Docker image's ``/opt/model``): its intended-use line is then read
from the ``model_card.md`` copied into that folder, and no registry is needed.
"""

from __future__ import annotations

import html
import logging
import os
import re
import sys
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from breast_cancer_pipeline.serving.front_door import allowed_hosts, front_door
from breast_cancer_pipeline.serving.levels import level_thresholds
from breast_cancer_pipeline.serving.packaging import REGISTERED_MODEL_NAME
from breast_cancer_pipeline.serving.registry import CHAMPION, MODEL_CARD
from breast_cancer_pipeline.serving.runtime import use_runtime

logger = logging.getLogger(__name__)

#: What is served unless ``MODEL_URI`` is set.
DEFAULT_MODEL_URI = f"models:/{REGISTERED_MODEL_NAME}@{CHAMPION}"
#: Where the registry is unless ``MLFLOW_TRACKING_URI`` is set (as in ``conf/base/mlflow.yml``).
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
#: The page's own files only: no CDN, no web fonts, no inline script.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; font-src 'none'; object-src 'none'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'none'"
)
_NOT_AVAILABLE = "not available"
_EXPLORER = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
_MODEL_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>[^/]+))$")


class ModelNotFoundError(RuntimeError):
    """The model to serve is not in the registry (or not at the given URI)."""


@dataclass(frozen=True)
class ModelInfo:
    """What the page and ``GET /model`` say about the served model."""

    uri: str
    name: str | None
    version: str | None
    alias: str | None
    run_id: str | None
    intended_use: str
    positive_class: str
    threshold: float
    #: Each level's operating threshold (``{"patient": 0.41}``), None without levels.
    level_thresholds: dict[str, float] | None = None


def intended_use(model_card: str) -> str | None:
    """The first line of the model card's "Intended use and limits" section, as plain text.

    Args:
        model_card: The Markdown of ``model_card.md`` (``templates/model_card.md.j2``).

    Returns:
        The line without its list marker and Markdown escapes, or None if there is none.
    """
    section = re.search(r"^## Intended use and limits\s*$(.*?)(?=^## |\Z)", model_card, re.M | re.S)
    if not section:
        return None
    item = re.search(r"^\s*[-*] (.+)$", section.group(1), re.M)
    if not item:
        return None
    return html.unescape(re.sub(r"\\(.)", r"\1", item.group(1).strip()))


def load_served_model(model_uri: str) -> tuple[Any, ModelInfo]:
    """Load the pyfunc model at ``model_uri`` and what the page says about it.

    Args:
        model_uri: An MLflow model URI (``models:/name@alias``, ``models:/name/3``,
            ``runs:/<run>/model`` or a local folder).

    Returns:
        ``(pyfunc model, info)``.

    Raises:
        ModelNotFoundError: The registry has no such model, alias or version (the message
            says how to make one), or nothing is at the URI.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    version = _registered_version(model_uri)
    try:
        model = mlflow.pyfunc.load_model(model_uri)
    except (MlflowException, OSError) as exc:
        raise ModelNotFoundError(f"cannot load the model {model_uri!r}: {exc}") from None
    config = served_part(model, "serving_model").config
    run_id = version.run_id if version else model.metadata.run_id
    card = _local_model_card(model_uri)
    alias = None
    if version is not None:  # the alias asked for, or those of the version asked for
        alias = _MODEL_URI.match(model_uri).group("alias") or ", ".join(sorted(version.aliases))
    info = ModelInfo(
        uri=model_uri,
        name=version.name if version else None,
        version=str(version.version) if version else None,
        alias=alias or None,
        run_id=run_id,
        intended_use=(intended_use(card) if card else _intended_use(version, run_id))
        or _NOT_AVAILABLE,
        positive_class=config["positive_class"],
        threshold=config["threshold"],
        level_thresholds=level_thresholds(config) or None,
    )
    return model, info


def _registered_version(model_uri: str) -> Any | None:
    """The registry's version behind a ``models:/`` URI (None for other URIs).

    Raises:
        ModelNotFoundError: No such registered model, alias or version.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    match = _MODEL_URI.match(model_uri)
    if not match:
        return None
    client = mlflow.MlflowClient()
    name, alias, number = match.group("name", "alias", "version")
    registry = mlflow.get_registry_uri()
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        versions = []
    if not versions:
        raise ModelNotFoundError(
            f"no model {name!r} is registered in {registry}: run `make demo` (it trains on "
            "synthetic images and registers one), or point MLFLOW_TRACKING_URI at your registry "
            "or MODEL_URI at a model"
        )
    try:
        if alias:
            return client.get_model_version_by_alias(name, alias)
        if number == "latest":
            return max(versions, key=lambda v: int(v.version))
        return client.get_model_version(name, number)
    except MlflowException:
        known = ", ".join(sorted((str(v.version) for v in versions), key=int))
        what = f"alias @{alias}" if alias else f"version {number}"
        hint = (
            " (the champion gate refused every version: see their champion.reason tags)"
            if alias == CHAMPION
            else ""
        )
        raise ModelNotFoundError(
            f"{name!r} in {registry} has no {what}{hint}; its versions are {known}: serve one "
            f"with MODEL_URI=models:/{name}/<version>, or run `make demo`"
        ) from None


def _local_model_card(model_uri: str) -> str | None:
    """The ``model_card.md`` inside a model folder served from disk (the Docker image's).

    A folder has no registry behind it: its card is the file copied beside ``MLmodel``.
    """
    if "://" in model_uri or model_uri.startswith(("models:", "runs:")):
        return None
    card = Path(model_uri) / MODEL_CARD
    return card.read_text(encoding="utf-8") if card.is_file() else None


def _intended_use(version: Any | None, run_id: str | None) -> str | None:
    """The intended-use line of the version's model card (tag ``model_card``, or the run's)."""
    import mlflow

    uri = (version.tags.get("model_card") if version else None) or (
        f"runs:/{run_id}/{MODEL_CARD}" if run_id else None
    )
    if not uri:
        return None
    try:
        path = mlflow.artifacts.download_artifacts(artifact_uri=uri)
        with open(path, encoding="utf-8") as card:
            return intended_use(card.read())
    except Exception:  # noqa: BLE001 - a missing card must not stop the server
        logger.warning("No model card at %s: the page says 'not available'", uri)
        return None


def served_part(model: Any, name: str) -> Any:
    """An input of the served pipeline, as the model was logged with it.

    Args:
        model: The pyfunc model.
        name: ``serving_model`` (the :class:`~breast_cancer_pipeline.serving.model.ServingModel`)
            or ``params:inference`` (the parameters, with the ``serving`` limits).

    Raises:
        ModelNotFoundError: The model is not one of this project's.
    """
    try:
        return model.unwrap_python_model().loaded_catalog.load(name)
    except Exception:  # noqa: BLE001 - any other model: say what is served here
        raise ModelNotFoundError(
            "the model is not a breast-cancer-pipeline model (a kedro-mlflow pipeline model "
            "with the inference parameters): serve one registered by `make demo` or `kedro run`"
        ) from None


def create_app(model: Any, info: ModelInfo, *, host: str = "127.0.0.1") -> Any:
    """The ASGI app: MLflow's scoring app, the page, its files and ``/model``, behind the door.

    Args:
        model: The pyfunc model (:func:`load_served_model`).
        info: What the page says about it.
        host: The address the server listens on (the default ``Host`` allow-list).

    Returns:
        The app, wrapped with :func:`~breast_cancer_pipeline.serving.front_door.front_door`.
    """
    from mlflow.environment_variables import MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT
    from mlflow.pyfunc import scoring_server

    limits = served_part(model, "params:inference")["serving"]
    app = scoring_server.init(model)
    # No API explorer: /docs and /redoc load their assets from a CDN; /openapi.json with them.
    app.router.routes = [r for r in app.router.routes if r.path not in _EXPLORER]
    _add_page(app, info)
    schema = model.metadata.get_input_schema()
    return front_door(
        app,
        invoke=lambda data, content_type: scoring_server.invocations(
            data, content_type, model, schema
        ),
        limits=limits,
        hosts=allowed_hosts(limits.get("allowed_hosts"), host),
        timeout=MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT.get(),
    )


def _add_page(app: Any, info: ModelInfo) -> None:
    """The page (``GET``/``HEAD /``), its files under ``/static`` and ``GET /model``."""
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from starlette.staticfiles import StaticFiles

    from breast_cancer_pipeline.templating import render

    page = render("page.html.j2", info=info, not_available=_NOT_AVAILABLE)
    headers = {
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Content-Type-Options": "nosniff",
    }

    def index():  # no return annotation: FastAPI would resolve it
        return HTMLResponse(page, headers=headers)

    def favicon():
        return Response(status_code=204)

    def model_info():
        return JSONResponse(asdict(info))

    app.add_api_route("/", index, methods=["GET", "HEAD"], include_in_schema=False)
    app.add_api_route("/favicon.ico", favicon, methods=["GET", "HEAD"], include_in_schema=False)
    app.add_api_route("/model", model_info, methods=["GET", "HEAD"])
    static = resources.files("breast_cancer_pipeline.serving") / "static"
    app.mount("/static", StaticFiles(directory=str(static)), name="static")


def main() -> None:
    """Serve ``MODEL_URI`` on ``HOST:PORT`` until interrupted (``make serve``)."""
    import mlflow
    import uvicorn

    os.environ.setdefault("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI)
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    model_uri = os.environ.get("MODEL_URI") or DEFAULT_MODEL_URI
    host, port = os.environ.get("HOST") or "127.0.0.1", int(os.environ.get("PORT") or 5001)
    try:
        model, info = load_served_model(model_uri)
        runtime = use_runtime(model, os.environ.get("RUNTIME"))
        app = create_app(model, info, host=host)
    except (ModelNotFoundError, ValueError) as exc:
        sys.exit(f"make serve: {exc}")
    print(
        f"Serving {info.uri} (version {info.version}, runtime {runtime}) on http://{host}:{port}/",
        flush=True,
    )
    uvicorn.run(app, host=host, port=port, log_level="warning")
