"""ASGI middleware in front of every route: API key, body size, and error counting.

It runs before BentoML parses a body, so a missing key or an oversized body is refused before
any work is done, and every refusal is JSON a client can act on.
"""

from __future__ import annotations

import hmac
import json

from service.metrics import ERRORS

# Health and metrics stay open: probes and Prometheus carry no key.
OPEN_PATHS = frozenset({"/livez", "/readyz", "/healthz", "/metrics"})
_ERROR_TYPES = {400: "bad_request", 401: "unauthorized", 404: "not_found", 413: "payload_too_large"}


def error_type(status: int) -> str:
    if status in _ERROR_TYPES:
        return _ERROR_TYPES[status]
    return "server_error" if status >= 500 else "client_error"


class RequestGuard:
    def __init__(self, app, api_key: str | None = None, max_body_bytes: int = 1_000_000):
        self.app = app
        self.api_key = api_key.encode() if api_key else None
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        headers = dict(scope.get("headers") or [])
        if self.api_key is not None and path not in OPEN_PATHS:
            given = headers.get(b"x-api-key", b"")
            # compare_digest: the time taken says nothing about how much of the key matched.
            if not hmac.compare_digest(given, self.api_key):
                return await _reply(send, 401, "missing or invalid x-api-key header")
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            return await _reply(send, 413, f"request body over {self.max_body_bytes} bytes")

        # Read the body here (bounded) so an oversized chunked body is refused with a 413
        # instead of failing deep inside the framework.
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body_bytes:
                return await _reply(send, 413, f"request body over {self.max_body_bytes} bytes")
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay_receive():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        async def counting_send(message):
            if message["type"] == "http.response.start" and message["status"] >= 400:
                ERRORS.labels(error_type(message["status"])).inc()
            await send(message)

        await self.app(scope, replay_receive, counting_send)


async def _reply(send, status: int, message: str) -> None:
    ERRORS.labels(error_type(status)).inc()
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
