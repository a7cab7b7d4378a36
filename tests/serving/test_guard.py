"""The request guard's ASGI wrapper: a body over the limit never reaches the app."""

import json

from breast_cancer_pipeline.serving import limit_request_body
from tests.serving._served import asgi_post, request_body


def test_a_body_over_the_limit_is_refused_before_the_app_reads_it():
    calls = []

    async def echo(scope, receive, send):
        """An app answering how many body bytes it received."""
        calls.append(scope["path"])
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        answer = json.dumps({"received": len(body)}).encode()
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    small = request_body(["x" * 1500])  # two 1 kB messages
    limited = limit_request_body(echo, max_bytes=len(small))
    for declare_length in (True, False):  # a body within the limit is passed on whole
        assert asgi_post(limited, small, declare_length=declare_length) == (
            200,
            {"received": len(small)},
        )
    big = request_body(["x" * 1500] * 2)
    status, body = asgi_post(limited, big)  # refused from the declared length
    assert status == 413
    assert body == {
        "error_code": "REQUEST_LIMIT_EXCEEDED",
        "message": f"the request is at least {len(big):,} bytes, more than "
        f"inference.serving.max_request_bytes = {len(small):,}: send fewer or smaller images "
        "per request",
    }
    status, body = asgi_post(limited, big, declare_length=False)  # while reading the chunks
    assert status == 413 and "max_request_bytes" in body["message"], body
    assert calls == ["/invocations"] * 2  # the refused bodies never reached the app
