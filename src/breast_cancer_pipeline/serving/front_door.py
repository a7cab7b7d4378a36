"""The server's front door: what every HTTP request meets before MLflow's scoring app.

:func:`front_door` wraps the ASGI app of :func:`~breast_cancer_pipeline.serving.server.create_app`:

* a ``Host`` header outside the allow-list (``inference.serving.allowed_hosts``; by default the
  bind address and the loopback names) is an HTTP 400, so a web page cannot reach a server on
  127.0.0.1 through a rebound DNS name;
* ``POST /invocations`` is answered here, by MLflow's own request handling
  (:func:`mlflow.pyfunc.scoring_server.invocations`, so rows and answers are those of
  ``mlflow models serve``), after these checks, each before the work it guards: the body's
  size (:func:`~breast_cancer_pipeline.serving.guard.limit_request_body`'s limit), a content
  type (415 without one), a body that parses (400: invalid or too deeply nested JSON, a CSV or
  parquet table that does not read) and the number of rows (413 over
  ``inference.serving.max_images``, before any DataFrame exists); CSV and parquet bodies are
  read into the JSON request they stand for, so MLflow's schema check treats the three alike;
* every error answer is a short JSON ``{"error_code", "message"}``: never the request, a stack
  trace or a server path.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from breast_cancer_pipeline.serving.guard import read_limited_body, send_json

#: Names a server bound to ``bind`` answers to when ``allowed_hosts`` is empty.
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
#: Longest error message answered (characters).
MAX_MESSAGE = 2000
_JSON, _CSV, _PARQUET = "application/json", "text/csv", "application/vnd.apache.parquet"
_ROW_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")
_ECHO = re.compile(r"Failed to predict data '.*?'\.\s*(Error:\s*)?", re.DOTALL)
_WILDCARDS = frozenset({"0.0.0.0", "::", ""})


def allowed_hosts(listed: Sequence[str] | None, bind: str) -> frozenset[str] | None:
    """The ``Host`` names the server answers to; ``None`` when any is allowed.

    Args:
        listed: ``inference.serving.allowed_hosts``; empty or ``None`` for the default.
        bind: The address the server listens on (``HOST``).

    Returns:
        The listed names, or ``bind`` and :data:`LOOPBACK_NAMES`; ``None`` (no check) when
        nothing is listed and the server listens on every interface, or ``*`` is listed.
    """
    if listed:
        return None if "*" in listed else frozenset(h.lower() for h in listed)
    return None if bind in _WILDCARDS else frozenset({bind.lower(), *LOOPBACK_NAMES})


def front_door(
    app: Callable[..., Any],
    *,
    invoke: Callable[[Any, str], Any],
    limits: Mapping[str, Any],
    hosts: frozenset[str] | None,
    timeout: float,
) -> Callable[..., Any]:
    """Wrap ``app`` with the checks of this module.

    Args:
        app: MLflow's scoring app with the page's routes.
        invoke: ``(data, content_type) -> InvocationsResponse``: MLflow's request handling for
            the served model (:func:`mlflow.pyfunc.scoring_server.invocations`, bound).
        limits: The ``inference.serving`` parameters (``max_request_bytes``, ``max_images``).
        hosts: :func:`allowed_hosts`.
        timeout: Seconds one prediction may take before a 504, as MLflow's server.

    Returns:
        The wrapped ASGI application.
    """

    async def door(scope: dict, receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers") or []}
        if hosts is not None and _host(headers) not in hosts:
            await send_error(send, 400, "BAD_REQUEST", _host_message(headers, hosts))
            return
        if scope["path"] != "/invocations" or scope["method"] != "POST":
            await app(scope, receive, send)
            return
        status, body = await _invocations(headers, receive, send, invoke, limits, timeout)
        if status:
            await send_json(send, status, body)

    return door


async def _invocations(
    headers: Mapping[bytes, bytes],
    receive: Callable[..., Any],
    send: Callable[..., Any],
    invoke: Callable[[Any, str], Any],
    limits: Mapping[str, Any],
    timeout: float,
) -> tuple[int, bytes]:
    """``(status, JSON body)`` of one ``POST /invocations``; status 0: already answered."""
    content_type = headers.get(b"content-type", b"").decode("latin-1").strip()
    if not content_type:
        return 415, _error("BAD_REQUEST", f"no Content-Type: send {_JSON}, {_CSV} or {_PARQUET}")
    body = await read_limited_body(headers, receive, send, limits["max_request_bytes"])
    if body is None:
        return 0, b""
    try:
        work = asyncio.to_thread(lambda: invoke(*read_request(body, content_type, limits)))
        answer = await asyncio.wait_for(work, timeout)
    except RequestRefused as refused:
        return refused.status, _error(refused.code, str(refused))
    except TimeoutError:
        return 504, _error("TIMEOUT", f"the prediction took more than {timeout:g} s")
    except Exception as exc:  # noqa: BLE001 - MLflow's errors: answered without the request
        return _mlflow_error(exc)
    return answer.status, _answer_body(answer)


class RequestRefused(ValueError):
    """A request refused before MLflow sees it, with its HTTP status and error code."""

    def __init__(self, message: str, status: int = 400, code: str = "BAD_REQUEST") -> None:
        super().__init__(message)
        self.status, self.code = status, code


def read_request(body: bytes, content_type: str, limits: Mapping[str, Any]) -> tuple[Any, str]:
    """What MLflow is handed for ``body``, and as which content type.

    JSON is parsed here, once. A CSV or parquet body is read into the JSON request it stands
    for (``dataframe_split``, every CSV cell as text), so that MLflow's schema check treats the
    three alike; its rows are counted first (CSV lines, the parquet footer's row count and
    uncompressed size), so an oversized request costs nothing to refuse.

    Args:
        body: The request body.
        content_type: Its ``Content-Type`` header.
        limits: The ``inference.serving`` parameters (``max_images``, ``max_request_bytes``).

    Returns:
        ``(data, content_type)``: the parsed JSON object and ``application/json`` for the three
        types read here; the body and its type as they came for any other (MLflow answers 415).

    Raises:
        RequestRefused: A body that does not parse (400), more rows than ``max_images`` or a
            parquet file that inflates past ``max_request_bytes`` (413).
    """
    mime = content_type.split(";", 1)[0].strip().lower()
    if mime == _JSON:
        data = _parse_json(body)
        _check_rows(_json_rows(data), limits["max_images"])
    elif mime == _CSV:
        _check_rows(
            max(body.count(b"\n") + (not body.endswith(b"\n")) - 1, 0), limits["max_images"]
        )
        data = _as_split(_read_table(body, "csv"))
    elif mime == _PARQUET:
        _check_parquet_footer(body, limits)
        data = _as_split(_read_table(body, "parquet"))
    else:
        return body, content_type
    return data, _JSON


def _check_rows(rows: int, max_images: int) -> None:
    if rows > max_images:
        raise RequestRefused(
            f"the request holds {rows} rows, more than inference.serving.max_images = "
            f"{max_images}: send them in several requests",
            413,
            "REQUEST_LIMIT_EXCEEDED",
        )


def _read_table(body: bytes, kind: str) -> Any:
    import pandas as pd  # noqa: PLC0415 - only for CSV and parquet requests

    try:
        if kind == "csv":
            return pd.read_csv(io.BytesIO(body), dtype=str, keep_default_na=False)
        return pd.read_parquet(io.BytesIO(body))
    except Exception as exc:  # noqa: BLE001 - untrusted bytes: any parser error is a bad body
        raise RequestRefused(f"the body is not a {kind} table: {type(exc).__name__}") from None


def _as_split(frame: Any) -> dict[str, Any]:
    columns = [str(c) for c in frame.columns]
    rows = frame.astype(object).where(frame.notna(), None).values.tolist()
    return {"dataframe_split": {"columns": columns, "data": rows}}


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = f" at byte {exc.pos}" if isinstance(exc, json.JSONDecodeError) else ""
        raise RequestRefused(f"the body is not valid JSON{where}: {type(exc).__name__}") from None
    except RecursionError:
        raise RequestRefused("the body's JSON is nested too deeply") from None


def _json_rows(data: Any) -> int:
    if not isinstance(data, dict):
        raise RequestRefused(f"the body must be a JSON object with one of the keys {_ROW_KEYS}")
    found = [data[k] for k in _ROW_KEYS if k in data]
    if not found:
        return 0  # MLflow names the keys it expects
    rows = found[0]
    if isinstance(rows, dict):  # dataframe_split's "data", or columns of equal length
        columns = [rows["data"]] if "data" in rows else list(rows.values())
        return max((len(c) if isinstance(c, list) else 1 for c in columns), default=0)
    return len(rows) if isinstance(rows, list) else 1


def _check_parquet_footer(body: bytes, limits: Mapping[str, Any]) -> None:
    import pyarrow.parquet as pq  # noqa: PLC0415 - only for parquet requests

    try:
        meta = pq.ParquetFile(io.BytesIO(body)).metadata
        groups = [meta.row_group(i) for i in range(meta.num_row_groups)]
        inflated = sum(
            g.column(c).total_uncompressed_size for g in groups for c in range(g.num_columns)
        )
    except Exception as exc:  # noqa: BLE001 - untrusted bytes: any parser error is a bad body
        raise RequestRefused(f"the body is not a parquet table: {type(exc).__name__}") from None
    _check_rows(meta.num_rows, limits["max_images"])
    if inflated > limits["max_request_bytes"]:
        raise RequestRefused(
            f"the parquet table inflates to {inflated:,} bytes, more than "
            f"inference.serving.max_request_bytes = {limits['max_request_bytes']:,}",
            413,
            "REQUEST_LIMIT_EXCEEDED",
        )


def _mlflow_error(exc: Exception) -> tuple[int, bytes]:
    status = getattr(exc, "get_http_status_code", lambda: 500)()
    if status >= 500 and not hasattr(exc, "error_code"):
        return 500, _error("INTERNAL_ERROR", "the server failed on this request; see its log")
    message = _ECHO.sub("", str(getattr(exc, "args", [""])[0] or exc))
    return status, _error(str(getattr(exc, "error_code", "BAD_REQUEST")), message)


def _answer_body(answer: Any) -> bytes:
    body = answer.response.encode() if isinstance(answer.response, str) else answer.response
    if answer.status < 400:
        return body
    return _error("BAD_REQUEST", body.decode("utf-8", "replace"))


def _error(code: str, message: str) -> bytes:
    if len(message) > MAX_MESSAGE:
        message = message[:MAX_MESSAGE] + " … (cut)"
    return json.dumps({"error_code": code, "message": message}).encode()


def _host(headers: Mapping[bytes, bytes]) -> str:
    host = headers.get(b"host", b"").decode("latin-1").strip().lower()
    if host.startswith("["):  # [::1]:5001
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _host_message(headers: Mapping[bytes, bytes], hosts: frozenset[str]) -> str:
    host = _host(headers)[:100] or "none"
    return (
        f"Host {host!r} is not one this server answers to ({', '.join(sorted(hosts))}): use one "
        "of them, or list the name in inference.serving.allowed_hosts"
    )


async def send_error(send: Callable[..., Any], status: int, code: str, message: str) -> None:
    """Send ``{"error_code": code, "message": message}`` with HTTP ``status``."""
    await send_json(send, status, _error(code, message))
