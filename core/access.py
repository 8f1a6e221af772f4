"""Who may do what: the roles a key carries and what each role opens.

Roles are ranked, each holding everything below it: ``predict`` classifies and reads the served
model; ``label`` also sends ``/feedback`` (labels train models); ``review`` also reads the drift
reports, the versions, the labels and the console (which show other clients' texts); ``admin``
also acts on them: acknowledges reports, releases or drops labels, promotes and rolls back.
One table (``ROUTE_ROLES``) says what each route needs; the guard enforces it and the API
document declares it, so the two cannot disagree.
"""

from __future__ import annotations

import re
from enum import StrEnum


class Role(StrEnum):
    PREDICT = "predict"
    LABEL = "label"
    REVIEW = "review"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return list(Role).index(self)

    def allows(self, needed: Role) -> bool:
        """Whether a key of this role may do what ``needed`` may."""
        return self.rank >= needed.rank


# EMOTION_API_KEY ("default") keeps the single-key set-up: its holder owns the stack. A named key
# given without a role is a labelling vendor's (what every named key was before roles).
DEFAULT_KEY_ROLE = Role.ADMIN
NAMED_KEY_ROLE = Role.LABEL
# What a request without a key gets where the service runs without keys (loopback, or
# EMOTION_ALLOW_ANONYMOUS): predictions only, never labels or other clients' texts.
ANONYMOUS_ROLE = Role.PREDICT

# (method, path pattern) -> the least role that opens it. ``{name}`` matches one path segment.
# A route the API document lists must have its line here (the document is not built without
# one: service.openapi), so no route is added open by mistake.
ROUTE_ROLES: dict[tuple[str, str], Role] = {
    ("POST", "/predict"): Role.PREDICT,
    ("POST", "/predict_batch"): Role.PREDICT,
    ("GET", "/model"): Role.PREDICT,
    ("GET", "/labels"): Role.PREDICT,
    ("POST", "/feedback"): Role.LABEL,
    ("GET", "/reports"): Role.REVIEW,
    ("GET", "/reports/{report_id}"): Role.REVIEW,
    ("GET", "/reports/{report_id}/page"): Role.REVIEW,
    ("GET", "/console/api/whoami"): Role.REVIEW,
    ("GET", "/console/api/timeline"): Role.REVIEW,
    ("GET", "/console/api/reports/{report_id}"): Role.REVIEW,
    ("GET", "/console/api/versions"): Role.REVIEW,
    ("GET", "/console/api/labels"): Role.REVIEW,
    ("GET", "/console/api/shadow"): Role.REVIEW,
    ("POST", "/console/api/reports/{report_id}/ack"): Role.ADMIN,
    ("POST", "/console/api/labels/review"): Role.ADMIN,
    ("POST", "/console/api/promote"): Role.ADMIN,
    ("POST", "/console/api/rollback"): Role.ADMIN,
}


def _pattern(template: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", re.escape(template)) + "$")


_COMPILED = [(method, _pattern(template), role) for (method, template), role in ROUTE_ROLES.items()]


def required_role(method: str, path: str) -> Role | None:
    """The least role a request of ``method`` to ``path`` needs; None for a path that no
    route serves (any valid key then learns it is not found)."""
    method = "GET" if method == "HEAD" else method
    for route_method, pattern, role in _COMPILED:
        if route_method == method and pattern.match(path):
            return role
    # Another method of a known path: whoever may use the path learns it is the wrong method.
    return max(path_roles(path), key=lambda role: role.rank, default=None)


def path_roles(path: str) -> set[Role]:
    """The roles any method of ``path`` needs; empty for a path no route serves."""
    return {role for _, pattern, role in _COMPILED if pattern.match(path)}
