"""The request guard: what keeps hostile or careless requests from exhausting the server.

The limits are the parameters ``inference.serving.*``:

* :func:`image_bytes` turns one cell of a request (base64 text, raw bytes, or a loader
  returning bytes) into file bytes for :func:`breast_cancer_pipeline.imaging.decode_image`,
  refusing a file over ``max_image_bytes`` before decoding its base64;
* :func:`check_request` refuses a request over ``max_images`` or ``max_request_bytes``
  (HTTP 413) before any image is decoded;
* :func:`row_error` is what a caller reads when an image cannot be used (without server paths
  or ingestion's fixes);
* :func:`request_error` is an error about a whole request that MLflow's server answers with
  just its message (:class:`RequestError`);
* :func:`limit_request_body` is an ASGI wrapper refusing large bodies before they are read,
  for a server the project builds itself (:mod:`breast_cancer_pipeline.serving.server`).

MLflow is imported only when a request error is raised, so importing this module is cheap.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from breast_cancer_pipeline.imaging import ImageDecodeError, ImageTooLargeError

_FIX_REQUEST = (
    "Send the whole image file (PNG, JPEG, TIFF or DICOM) base64-encoded in the 'image' column, "
    "e.g. $(base64 -w0 image.png)"
)
_FIX_FILE = "Re-export the file from its source, or remove it from the folder"

#: What the caller of the served model (or of the batch command) can do about a problem, by
#: :attr:`~breast_cancer_pipeline.imaging.ImageDecodeError.reason`; other problems get
#: :data:`_FIX_REQUEST` (a request) or :data:`_FIX_FILE` (a file).
_FIXES = {
    "decompression bomb": "Downsample the image before sending it",
    "file too large": "Send a smaller file (e.g. a compressed DICOM or a downsampled PNG)",
    "unsupported 16-bit colour image": "Convert it to 8-bit RGB or to 16-bit grayscale",
    "unsupported pixel mode": "Convert it to 8-bit grayscale or RGB",
    "DICOM without pixel data": "Send an image, not a DICOM report or presentation state",
    "page out of range": "Send a file holding the image as its first page",
    "image too large to tile": (
        "Downsample the image before sending it, or raise inference.serving.decode_memory_mb"
    ),
}


def image_bytes(value: Any, name: str, *, max_bytes: int) -> bytes:
    """The file bytes held by one ``image`` cell of a request.

    Args:
        value: base64 text (optionally a ``data:...;base64,`` URL), raw bytes, or a
            zero-argument callable returning bytes (the batch command's lazy file loaders).
        name: Row name used in error messages.
        max_bytes: Largest file accepted in a request (``inference.serving.max_image_bytes``),
            checked before base64 decoding; not applied to file loaders.

    Returns:
        The file's bytes.

    Raises:
        ImageDecodeError: The cell is empty, not valid base64 or holds a larger file.
    """
    if callable(value):
        return value()
    size = _payload_size(value)
    if size is not None and size > max_bytes:
        raise ImageDecodeError(
            name,
            "file too large",
            f"{size:,} bytes is more than inference.serving.max_image_bytes = {max_bytes:,}",
        )
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise ImageDecodeError(name, "no image in this row", fix=_FIX_REQUEST)
    if not isinstance(value, str):
        raise ImageDecodeError(
            name, "not base64 text", f"got a {type(value).__name__}", fix=_FIX_REQUEST
        )
    text = value.strip()
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageDecodeError(name, "not valid base64", str(exc), fix=_FIX_REQUEST) from None


def _payload_size(value: Any) -> int | None:
    """Bytes of the file a request cell holds (base64 text: estimated from its length)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return len(value)
    if isinstance(value, str):
        return len(value) * 3 // 4
    return None


def row_error(exc: ImageDecodeError, *, from_file: bool) -> str:
    """The message a caller reads for a row whose image cannot be scored.

    Imaging says what is wrong (:attr:`~breast_cancer_pipeline.imaging.ImageDecodeError.problem`);
    the fix is serving's own (not ingestion's ``ingestion.exclude``).

    Args:
        exc: The decoding error.
        from_file: The row is a file of the batch command, not a cell of a request.
    """
    if isinstance(exc, ImageTooLargeError):
        problem = (
            f"cannot decode {exc.name!r}: image too large: {exc.width} × {exc.height} px exceeds "
            f"inference.max_pixels={exc.max_pixels}"
        )
    else:
        problem = exc.problem
    return f"{problem}. {_FIXES.get(exc.reason, _FIX_FILE if from_file else _FIX_REQUEST)}"


def check_request(cells: Sequence[Any], limits: Mapping[str, Any]) -> None:
    """Refuse a request that holds too many images or too many bytes, before decoding any.

    The batch command's rows are file loaders (read ``batch_size`` at a time): not counted.

    Args:
        cells: The ``image`` column of the request.
        limits: The ``inference.serving`` parameters.

    Raises:
        Exception: :func:`request_error` with HTTP status 413, naming the limit.
    """
    sizes = [len(c) for c in cells if isinstance(c, str | bytes | bytearray | memoryview)]
    if len(sizes) > limits["max_images"]:
        raise request_error(
            f"the request holds {len(sizes)} images, more than inference.serving.max_images = "
            f"{limits['max_images']}: send them in several requests",
            status=413,
        )
    if sum(sizes) > limits["max_request_bytes"]:
        raise request_error(_too_large_message(sum(sizes), limits["max_request_bytes"]), 413)


def _too_large_message(size: int, limit: int) -> str:
    # ``size``: the declared or parsed size, or what was read of a chunked body when it passed.
    return (
        f"the request is at least {size:,} bytes, more than "
        f"inference.serving.max_request_bytes = {limit:,}: send fewer or smaller images per "
        "request"
    )


def request_error(message: str, status: int = 400) -> Exception:
    """An error about a whole request, answered with HTTP ``status`` and just ``message``.

    MLflow's scoring server answers an ``MlflowException`` raised by the model with its
    ``get_http_status_code()`` and ``serialize_as_json()``, but prefixes the message with the
    whole request (``Failed to predict data '<dataframe>'``); any other exception becomes a 400
    carrying the server's stack trace. The returned :class:`RequestError` (an
    ``MlflowException`` and a ``ValueError``) serialises the message as written.

    Args:
        message: What was wrong with the request and what to send instead.
        status: 400 (a malformed request) or 413 (too large).
    """
    return _request_error_class()(message, status)


@functools.cache
def _request_error_class() -> type:
    from mlflow.exceptions import MlflowException  # seconds to import: only once needed
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, REQUEST_LIMIT_EXCEEDED

    class RequestError(MlflowException, ValueError):
        def __init__(self, message: str, status: int = 400) -> None:
            code = INVALID_PARAMETER_VALUE if status == 400 else REQUEST_LIMIT_EXCEEDED
            super().__init__(message, error_code=code)
            self.status = status

        def get_http_status_code(self) -> int:
            return self.status

        def serialize_as_json(self) -> str:
            # ``self.message`` may carry MLflow's prefix; ``args[0]`` is the message as raised.
            return json.dumps({"error_code": self.error_code, "message": self.args[0]})

        def __reduce__(self) -> tuple[Any, ...]:
            return (request_error, (self.args[0], self.status))

    RequestError.__module__, RequestError.__qualname__ = __name__, "RequestError"
    return RequestError


def __getattr__(name: str) -> Any:
    # ``serving.RequestError`` without importing MLflow with this module.
    if name == "RequestError":
        return _request_error_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def limit_request_body(app: Callable[..., Any], max_bytes: int) -> Callable[..., Any]:
    """Wrap an ASGI app so that a body over ``max_bytes`` gets HTTP 413 and never reaches it.

    ``mlflow models serve`` builds its app itself and reads the whole body before the model
    sees it; a server the project builds (e.g. around ``mlflow.pyfunc.scoring_server.init``)
    wraps its app with this. A declared ``Content-Length`` over the limit is refused before
    anything is read; a chunked body as soon as the limit is passed. Bodies within the limit
    are passed on whole.

    Args:
        app: An ASGI application.
        max_bytes: ``inference.serving.max_request_bytes``.

    Returns:
        The wrapped ASGI application.
    """

    async def limited(scope: dict, receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        body = await read_limited_body(dict(scope.get("headers") or []), receive, send, max_bytes)
        if body is None:
            return
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await app(scope, replay, send)

    return limited


async def read_limited_body(
    headers: Mapping[bytes, bytes],
    receive: Callable[..., Any],
    send: Callable[..., Any],
    max_bytes: int,
) -> bytes | None:
    """Read a request's whole body, or answer HTTP 413 as soon as it is over ``max_bytes``.

    Args:
        headers: The request's headers (lower-case names).
        receive: The ASGI ``receive`` callable.
        send: The ASGI ``send`` callable (used for the 413 only).
        max_bytes: ``inference.serving.max_request_bytes``.

    Returns:
        The body, or ``None`` when it was refused (413 sent) or the client went away.
    """
    declared = headers.get(b"content-length", b"").strip()
    if declared.isdigit() and int(declared) > max_bytes:
        await _send_too_large(send, int(declared), max_bytes)
        return None
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            return None  # the client went away
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        more = message.get("more_body", False)
        if size > max_bytes:
            await _send_too_large(send, size, max_bytes)
            return None
    return b"".join(chunks)


async def _send_too_large(send: Callable[..., Any], size: int, limit: int) -> None:
    message = _too_large_message(size, limit)
    body = json.dumps({"error_code": "REQUEST_LIMIT_EXCEEDED", "message": message}).encode()
    await send_json(send, 413, body)


async def send_json(send: Callable[..., Any], status: int, body: bytes) -> None:
    """Send a whole JSON answer ``body`` with HTTP ``status`` through the ASGI ``send``."""
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
