"""The service's OpenAPI document, made exact: every status the service answers is declared with
the body it really sends, and every constraint it enforces is in the schema.

BentoML generates the document from the API signatures and FastAPI's routes; this module fixes
what that leaves out or gets wrong (error bodies, 401/413/503, the API key, the served model's
labels, text media types) and replaces BentoML's stock description, whose badges load images
from outside hosts. ``schemathesis --checks all`` runs against the result in the tests.
"""

from __future__ import annotations

import copy

from core.access import ANONYMOUS_ROLE, Role, required_role

ERROR_SCHEMA = {
    "type": "object",
    "title": "Error",
    "required": ["error"],
    "properties": {
        "error": {"type": "string", "description": "What went wrong, in words a client can act on."},
        "detail": {"description": "Per-field validation errors, when there are any."},
    },
}
API_KEY_SCHEME = {"type": "apiKey", "in": "header", "name": "x-api-key"}
# Health, metrics and the docs stay open: probes, Prometheus and a browser carry no key.
# /ui and /console are static pages: they ask their user for the key and send it with each request.
OPEN_PATHS = frozenset(
    {
        "/livez",
        "/readyz",
        "/healthz",
        "/metrics",
        "/",
        "/docs",
        "/docs.json",
        "/docs/init.js",
        "/ui",
        "/console",
        "/console/console.js",
        "/console/console.css",
    }
)
# The report page the console's sandboxed frame loads, which cannot send a key: its ticket
# (made for a review key, minutes long) stands for the key.
TICKET_PATH = "/reports/{report_id}/page"
JSON_BODY_PATHS = (
    "/predict",
    "/predict_batch",
    "/feedback",
    "/console/api/promote",
    "/console/api/rollback",
    "/console/api/labels/review",
)
PLAIN_TEXT_PATHS = frozenset({"/livez", "/readyz", "/healthz", "/metrics"})
HTML_PATHS = frozenset({"/ui", "/console", TICKET_PATH})
# Status codes every operation of the service can answer, by kind of operation.
_DESCRIPTIONS = {
    "202": "Accepted: the label waits for its prediction, which is not logged yet.",
    "400": "Bad request: the body or a parameter failed validation.",
    "401": "Missing or invalid x-api-key header.",
    "403": "Forbidden: this key's role does not open this operation (see x-required-role), or "
    "the service runs without keys.",
    "409": "Conflict: the registry is not in the state the action needs (no waiting challenger, "
    "nothing to roll back, a page gone stale).",
    "404": "Not found.",
    "413": "Request body over the service's limit.",
    "429": "Too many labels from this key (its quota an hour, or between retrains); retry after the "
    "Retry-After header's seconds.",
    "415": "The body is not sent as application/json.",
    "500": "Internal error (logged on the server).",
    "503": "Overloaded or a dependency is down; retry after the Retry-After header's seconds.",
}
_PREDICT_CODES = ("400", "413", "415", "500", "503")
_ROUTE_CODES = {
    ("/model", "get"): ("500", "503"),
    ("/labels", "get"): ("500", "503"),
    ("/feedback", "post"): ("202", "400", "403", "413", "415", "429", "500", "503"),
    ("/reports", "get"): ("400", "500", "503"),
    ("/reports/{report_id}", "get"): ("400", "404", "500", "503"),
    ("/ui", "get"): ("500",),
    ("/console", "get"): ("500",),
    (TICKET_PATH, "get"): ("400", "403", "404", "500", "503"),
    ("/console/api/whoami", "get"): ("500",),
    ("/console/api/timeline", "get"): ("400", "500", "503"),
    ("/console/api/reports/{report_id}", "get"): ("404", "500", "503"),
    ("/console/api/reports/{report_id}/ack", "post"): ("400", "404", "413", "415", "500", "503"),
    ("/console/api/versions", "get"): ("500", "503"),
    ("/console/api/promote", "post"): ("400", "409", "413", "415", "500", "503"),
    ("/console/api/rollback", "post"): ("400", "409", "413", "415", "500", "503"),
    ("/console/api/labels", "get"): ("400", "500", "503"),
    ("/console/api/shadow", "get"): ("500", "503"),
    ("/console/api/labels/review", "post"): ("400", "404", "413", "415", "500", "503"),
}


def exact_document(generated: dict, labels: list[str], api_key: bool, max_labels: int = 1) -> dict:
    """The service's document from BentoML's ``generated`` one."""
    spec = copy.deepcopy(generated)
    spec["info"] = {
        "title": "emotion-ops",
        "version": spec.get("info", {}).get("version") or "0.1.0",
        "description": "Emotion classification of English text, served from the MLflow registry "
        "alias the service is configured for. `POST /predict` and `/predict_batch` classify; "
        "`POST /feedback` sends the true label (or, for a multi-label model, labels) of a logged "
        "prediction. A single-label model's `all_emotions` sum to 1; a multi-label model's are "
        "independent probabilities, one per label, and `emotions` lists those over their thresholds. "
        + (
            "Every endpoint but health, metrics, these docs and the pages needs the `x-api-key` header, "
            if api_key
            else "Predictions need no key on this deployment; everything else needs one, "
        )
        + "and each key has a role that opens what it needs (each operation's `x-required-role`): "
        "`predict` < `label` (adds feedback) < `review` (reports, versions, labels, the console) < "
        "`admin` (acknowledge, release or drop labels, promote, roll back). A key of a lower role "
        "gets 403.",
    }
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    for stale in ("InvalidArgument", "NotFound", "InternalServerError", "HTTPValidationError"):
        schemas.pop(stale, None)
    schemas.pop("ValidationError", None)
    schemas["Error"] = ERROR_SCHEMA
    if api_key:
        spec["components"]["securitySchemes"] = {"ApiKey": API_KEY_SCHEME}

    for path, operations in spec.get("paths", {}).items():
        for method, operation in operations.items():
            # BentoML's generated responses are keyed by int, FastAPI's by str: one kind here.
            responses = {str(code): value for code, value in operation.get("responses", {}).items()}
            operation["responses"] = responses
            responses.pop("422", None)  # FastAPI's; validation errors answer 400 here
            if path in PLAIN_TEXT_PATHS:
                responses["200"] = {
                    "description": responses.get("200", {}).get("description", "OK"),
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
                if path == "/readyz":
                    responses["503"] = _error_response("503", "Not ready yet: the model is loading.")
                continue
            if path in HTML_PATHS or path == "/":
                responses["200"] = {
                    "description": "A page.",
                    "content": {"text/html": {"schema": {"type": "string"}}},
                }
            codes = _ROUTE_CODES.get((path, method), _PREDICT_CODES)
            for code in codes:
                responses[code] = _error_response(code)
            # BentoML declares 404 on its APIs with a body it never sends; its APIs do not 404.
            if (path, method) not in _ROUTE_CODES and "404" in responses and "404" not in codes:
                responses.pop("404")
            if path in OPEN_PATHS:
                continue
            needed = required_role(method.upper(), path.replace("{", "").replace("}", ""))
            if needed is None:
                raise ValueError(f"{method.upper()} {path} has no role in core.access.ROUTE_ROLES")
            operation["x-required-role"] = needed.value
            if needed.rank > Role.PREDICT.rank or (not api_key and not ANONYMOUS_ROLE.allows(needed)):
                responses["403"] = _error_response("403")
            if path == TICKET_PATH:
                operation["security"] = []  # its ticket query parameter stands for the key
            elif api_key:
                responses["401"] = _error_response("401")
                operation["security"] = [{"ApiKey": []}]
            else:
                operation["security"] = []
    _declare_inputs(spec, labels, max_labels)
    for path in JSON_BODY_PATHS:
        body = spec["paths"].get(path, {}).get("post", {}).get("requestBody")
        if body is not None:
            body["required"] = True  # an empty body is refused with 400
    _declare_feedback_outputs(spec)
    return spec


def _error_response(code: str, description: str | None = None) -> dict:
    response = {
        "description": description or _DESCRIPTIONS[code],
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    if code in ("429", "503"):
        response["headers"] = {
            "Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}
        }
    return response


def _declare_inputs(spec: dict, labels: list[str], max_labels: int) -> None:
    """Constraints the service enforces that the generated schemas lack."""
    _declare_batch_alias(spec)
    feedback = spec["components"]["schemas"].get("Feedback")
    if feedback:
        feedback["properties"]["label"] = {
            "type": "string",
            "enum": list(labels),
            "description": "The true emotion: one of the served model's labels.",
        }
        feedback["properties"]["labels"] = {
            "type": "array",
            "items": {"type": "string", "enum": list(labels)},
            "minItems": 1,
            "maxItems": max_labels,
            "description": "The true emotions, each one of the served model's labels (repeats count "
            f"once); more than one for a multi-label model only (at most {max_labels} here).",
        }
        # Exactly one of the two (label or labels), never null.
        feedback["oneOf"] = [
            {"required": ["label"], "not": {"required": ["labels"]}},
            {"required": ["labels"], "not": {"required": ["label"]}},
        ]
        feedback["required"] = [
            name for name in feedback.get("required", []) if name not in ("label", "labels")
        ]


def _declare_batch_alias(spec: dict) -> None:
    """``/predict_batch`` takes its list as ``texts`` or, for the seed projects' clients, as
    ``input`` (``service.guard`` renames it): exactly one of the two."""
    body = spec["paths"].get("/predict_batch", {}).get("post", {}).get("requestBody", {})
    for media in body.get("content", {}).values():
        generated = media.get("schema", {})
        resolved = generated
        if "$ref" in generated:
            resolved = spec["components"]["schemas"][generated["$ref"].rsplit("/", 1)[-1]]
        texts = resolved.get("properties", {}).get("texts")
        if texts is None:
            continue
        media["schema"] = {
            "oneOf": [
                {"allOf": [generated, {"not": {"required": ["input"]}}]},
                {
                    "type": "object",
                    "required": ["input"],
                    "properties": {"input": texts},
                    "not": {"required": ["texts"]},
                },
            ]
        }


def _declare_feedback_outputs(spec: dict) -> None:
    """A pending label answers 202 with the same receipt as a stored one's 200."""
    feedback = spec["paths"].get("/feedback", {}).get("post")
    if feedback and "200" in feedback["responses"]:
        feedback["responses"]["202"] = {
            **feedback["responses"]["200"],
            "description": _DESCRIPTIONS["202"],
        }
