"""ASGI middleware in front of every route: API key, body size, disconnects and error counting.

It runs before BentoML parses a body, so a missing key or an oversized body is refused before
any work is done, and every refusal is JSON a client can act on.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from contextvars import ContextVar

from core.access import ANONYMOUS_ROLE, Role, required_role
from service.metrics import ERRORS
from service.openapi import JSON_BODY_PATHS, OPEN_PATHS

_ERROR_TYPES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    413: "payload_too_large",
    415: "unsupported_media_type",
    503: "unavailable",
}
RETRY_AFTER_SECONDS = b"1"
# BentoML answers any error of 500 and up with one generic sentence. A handler that knows what
# the client should do puts it here (``say_error``) and the guard puts it into the body.
_ERROR_MESSAGE: ContextVar[dict | None] = ContextVar("emotion_error_message", default=None)


# The name of the API key this request came with: feedback records it as the label's source.
_KEY_NAME: ContextVar[str | None] = ContextVar("emotion_key_name", default=None)


# The role of that key (the anonymous role without keys).
_KEY_ROLE: ContextVar[Role] = ContextVar("emotion_key_role", default=ANONYMOUS_ROLE)


def key_name() -> str | None:
    """The name of the key that let this request in (None without keys)."""
    return _KEY_NAME.get()


def key_role() -> Role:
    """The role of the key that let this request in."""
    return _KEY_ROLE.get()


def say_error(message: str) -> None:
    """Make ``message`` the body's ``error`` of this request's error response."""
    holder = _ERROR_MESSAGE.get()
    if holder is not None:
        holder["error"] = message


def is_open(path: str) -> bool:
    """Health, metrics, the pages with their assets need no key; a report's page for the
    console's frame carries a ticket instead (checked by its route)."""
    return (
        path in OPEN_PATHS
        or path.startswith("/static_content/")
        or (path.startswith("/reports/") and path.endswith("/page") and path.count("/") == 3)
    )


def error_type(status: int) -> str:
    if status in _ERROR_TYPES:
        return _ERROR_TYPES[status]
    return "server_error" if status >= 500 else "client_error"


def refusal(role: Role, needed: Role, keyed: bool) -> str:
    """Why a request of ``role`` may not do what ``needed`` may, and what to do about it."""
    if not keyed:
        return (
            f"this needs a key with role '{needed}': start the service with EMOTION_API_KEY set "
            "(or EMOTION_API_KEYS with roles) and send it as x-api-key"
        )
    return f"this key's role is '{role}'; this needs role '{needed}' or above: ask an admin for such a key"


class RequestGuard:
    def __init__(
        self,
        app,
        api_keys: dict[str, tuple[str, Role]] | None = None,
        max_body_bytes: int = 1_000_000,
        watch_disconnects: bool = True,
    ):
        self.app = app
        # name -> (key, role): each client (or labelling vendor) its own, so a label says who
        # gave it, one leaked key can be revoked alone, and each key opens what its role needs.
        self.api_keys = {name: key.encode() for name, (key, _) in (api_keys or {}).items()} or None
        self.roles = {name: Role(role) for name, (_, role) in (api_keys or {}).items()}
        self.max_body_bytes = max_body_bytes
        self.watch_disconnects = watch_disconnects

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        headers = dict(scope.get("headers") or [])
        if not is_open(path):
            role = ANONYMOUS_ROLE
            if self.api_keys is not None:
                name = self._matching_key(headers.get(b"x-api-key", b""))
                if name is None:
                    return await _reply(send, 401, "missing or invalid x-api-key header")
                _KEY_NAME.set(name)
                role = self.roles[name]
                _KEY_ROLE.set(role)
            needed = required_role(scope.get("method", "GET"), path)
            if needed is not None and not role.allows(needed):
                return await _reply(send, 403, refusal(role, needed, self.api_keys is not None))
        media_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if path in JSON_BODY_PATHS and media_type and media_type != b"application/json":
            return await _reply(send, 415, "send the body as JSON, with content-type: application/json")
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            return await _reply(send, 413, f"request body over {self.max_body_bytes} bytes")

        # Read the body here (bounded) so an oversized chunked body is refused with a 413
        # instead of failing deep inside the framework.
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None  # the client left before sending its request: nothing to do
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body_bytes:
                return await _reply(send, 413, f"request body over {self.max_body_bytes} bytes")
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if path == "/predict_batch" and b'"input"' in body:  # only then is it parsed twice
            renamed = _texts_under_their_own_name(body)
            if renamed is None:
                return await _reply(send, 400, "give the texts as 'texts' or as 'input', not both")
            body = renamed
            scope = {
                **scope,
                "headers": [
                    (name, str(len(body)).encode() if name == b"content-length" else value)
                    for name, value in scope.get("headers") or []
                ],
            }
        replayed = False
        disconnected = asyncio.Event()

        async def replay_receive():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            await disconnected.wait()
            return {"type": "http.disconnect"}

        error_start: dict | None = None
        answered = False
        error_body: list[bytes] = []

        async def counting_send(message):
            nonlocal error_start, answered
            final = message["type"] == "http.response.pathsend" or (
                message["type"] == "http.response.body" and not message.get("more_body", False)
            )
            if final:
                answered = True  # from here a disconnect is the connection ending, not a hang-up
            if message["type"] == "http.response.start":
                status = message["status"]
                if status < 400:
                    return await send(message)
                ERRORS.labels(error_type(status)).inc()
                error_start = message  # held until the body is known: it may be rewritten
                return None
            if error_start is None or message["type"] != "http.response.body":
                return await send(message)
            error_body.append(message.get("body", b""))
            if message.get("more_body", False):
                return None
            start, body = _one_error_shape(error_start, b"".join(error_body), held.get("error"))
            await send(start)
            await send({"type": "http.response.body", "body": body})
            return None

        # A client that hangs up cancels its request, so texts nobody waits for are never
        # computed (the batcher drops cancelled requests from its queue). The handler runs in
        # this task and one watcher task cancels it: a second task per request and
        # asyncio.wait cost more of the event loop's time (docs/performance.md, bench path).
        current = asyncio.current_task()
        hung_up = False

        async def watch_for_disconnect(handler: asyncio.Task):
            nonlocal hung_up
            try:
                while (await receive())["type"] != "http.disconnect":
                    pass
            except Exception:  # the server cannot say: serve the request to its end
                return
            disconnected.set()
            # Servers say 'disconnect' once the response is complete too (uvicorn does): the app
            # may still be at work after its last byte (logging, metrics), and that must finish.
            if not answered:
                hung_up = True
                handler.cancel()

        held: dict = {}
        token = _ERROR_MESSAGE.set(held)
        watcher = None
        if self.watch_disconnects and current is not None:
            watcher = asyncio.ensure_future(watch_for_disconnect(current))
        try:
            await self.app(scope, replay_receive, counting_send)
            if hung_up and current is not None:  # the app swallowed our cancel: take it back
                current.uncancel()
            return None
        except asyncio.CancelledError:
            # Ours alone (the client hung up): the request ends here. Anyone else's (BentoML's
            # timeout, shutdown) goes on up.
            if hung_up and current is not None and current.uncancel() == 0:
                return None
            raise
        except Exception:
            if hung_up and current is not None:  # the app turned our cancel into an error: nobody waits
                current.uncancel()
                return None
            if error_start is not None and not error_body:
                # The app failed after starting an error response we held: answer it in our shape.
                await _reply(send, 500, "internal error; see the server log")
            raise
        finally:
            _ERROR_MESSAGE.reset(token)
            if watcher is not None:
                watcher.cancel()

    def _matching_key(self, given: bytes) -> str | None:
        # Every key is compared, each with compare_digest: the time taken says nothing about
        # which key, or how much of one, matched.
        matched = None
        for name, key in (self.api_keys or {}).items():
            if hmac.compare_digest(given, key):
                matched = name
        return matched


def _one_error_shape(start: dict, body: bytes, message: str | None) -> tuple[dict, bytes]:
    """Every error body as the document declares it: one JSON object with ``error``.

    BentoML sends some errors as a one-element list, and non-JSON text for others (a 404 of
    an unknown path, a 405); a 503 also gets Retry-After.
    """
    headers = [
        (name, value)
        for name, value in start.get("headers", [])
        if name.lower() not in (b"content-length", b"content-type")
    ]
    try:
        payload = json.loads(body) if body else None
    except ValueError:
        payload = None
    if isinstance(payload, list) and len(payload) == 1 and isinstance(payload[0], dict):
        payload = payload[0]
    if not isinstance(payload, dict) or not isinstance(payload.get("error"), str):
        text = body.decode("utf-8", "replace").strip() or "error"
        payload = {"error": text}
    if message:
        payload = {**payload, "error": message}
    if start["status"] == 503:  # overload or a dependency down: say when to come back
        headers.append((b"retry-after", RETRY_AFTER_SECONDS))
    encoded = json.dumps(payload).encode()
    headers += [(b"content-type", b"application/json"), (b"content-length", str(len(encoded)).encode())]
    return {**start, "headers": headers}, encoded


def _texts_under_their_own_name(body: bytes) -> bytes | None:
    """A batch sent as ``{"input": [...]}`` (the seed projects' clients) as ``{"texts": [...]}``;
    None when it names both. Anything else passes as it came, for the framework to judge."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):  # not JSON, or nested past the parser's depth
        return body
    if not isinstance(document, dict) or "input" not in document:
        return body
    if "texts" in document:
        return None
    document["texts"] = document.pop("input")
    # As compact as it came: escaping every non-ASCII character could push it past the body limit.
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


async def _reply(send, status: int, message: str) -> None:
    ERRORS.labels(error_type(status)).inc()
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def endpoint_label(path: str) -> str:
    """The route a path belongs to: BentoML labels request metrics by raw path, so without this
    every unknown path (or report id) a client sends would create new series."""
    if path in _KNOWN_ROUTES:
        return path
    if path.startswith("/reports/"):
        return "/reports/{report_id}/page" if path.endswith("/page") else "/reports/{report_id}"
    if path.startswith("/console/"):
        return "/console/{path}"
    if path.startswith("/static_content/"):
        return "/static_content/{file}"
    return "other"


_KNOWN_ROUTES = frozenset(
    {
        "/predict",
        "/predict_batch",
        "/feedback",
        "/model",
        "/labels",
        "/reports",
        "/ui",
        "/console",
        "/docs/init.js",
        "/schema.json",
        *OPEN_PATHS,
    }
)


def bound_endpoint_labels() -> None:
    """Make BentoML's request metrics label by route, not by raw path.

    BentoML's metrics middleware is the outermost one and reads ``scope["path"]`` before any
    middleware of ours runs, so it is replaced (before the server builds its app) by a subclass
    that hands it the route's label and gives the inner app the real path back.
    """
    from bentoml._internal.server.http import instruments

    original = instruments.RunnerTrafficMetricsMiddleware
    if getattr(original, "_emotion_bounded", False):
        return

    class BoundedLabelsMetricsMiddleware(original):  # type: ignore[valid-type,misc]
        _emotion_bounded = True

        def __init__(self, app, *args, **kwargs):
            async def with_real_path(scope, receive, send):
                real = scope.get("_emotion_real_path")
                if real is not None:
                    scope = {**scope, "path": real}
                await app(scope, receive, send)

            super().__init__(with_real_path, *args, **kwargs)

        async def __call__(self, scope, receive, send):
            if scope["type"].startswith("http"):
                label = endpoint_label(scope["path"])
                if label != scope["path"]:
                    scope = {**scope, "path": label, "_emotion_real_path": scope["path"]}
            await super().__call__(scope, receive, send)

    instruments.RunnerTrafficMetricsMiddleware = BoundedLabelsMetricsMiddleware  # type: ignore[misc]
