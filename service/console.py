"""The review console's data: what the loop did, joined, as JSON for ``/console``'s page.

Framework-free: ``service.service`` serves these over HTTP with the key's role checked by the
guard (``core.access``); the page renders every string as text, never as markup. The actions
(acknowledge, release or drop labels, approve a challenger, roll back) are the functions the CLI
runs: ``ReportIndex.acknowledge``, ``core.store.review.review_labels``,
``core.registry.approve_challenger`` and ``rollback_champion``.

The shadow's page (``shadow_view``) is what ``emotion-ops shadow`` prints too.

The Evidently page of a report is shown in a sandboxed frame, which cannot send the key: the
console asks for a ticket (``report_ticket``), a short-lived signature of one report id that
only keys' holders can make, and the frame loads ``/reports/{id}/page?ticket=...``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import time
from collections import Counter
from typing import Any

import pandas as pd

from core.access import Role
from core.labels import QUARANTINED, REVIEW_STATUSES
from core.registry import AWAITING_REVIEW, CHALLENGER, CHAMPION, PREVIOUS_CHAMPION_TAG
from core.shadow import ShadowRequirement, ShadowSummaries

TICKET_SECONDS = 120
# The page shows these many rows of a listing at most.
MOST_ROWS = 500
_RETRAINED = re.compile(r"retrained version (\d+)")
# Tags worth a card's space, by group, in the order shown.
CARD_GROUPS = (
    ("metrics", ("test_accuracy", "test_macro_f1", "test_micro_f1", "base_model", "task", "label_set")),
    ("gate", ("promotion.decision", "promotion.reason", "promotion.time", "promotion.champion_version",
              "promotion.test_macro_f1", "promotion.champion_test_macro_f1", "promotion.tolerance",
              "promotion.floor", "promotion.gate_sets", "promotion.approved_by", "promotion.approved_at")),
    ("lineage", ("distill.teacher_version", "distill.layers", "distill.tolerance", "distill.gate_data",
                 PREVIOUS_CHAMPION_TAG, "retrain.report_id", "rollback.time", "rollback.to", "rollback.by")),
    ("screen", ("retrain.feedback_rows", "retrain.quarantined", "screen.raised_ngrams")),
    ("shadow", ("shadow.rows", "shadow.agreement", "shadow.labelled", "shadow.accuracy")),
)  # fmt: skip


def ticket_secret(keys: dict[str, tuple[str, Role]]) -> bytes:
    """A secret every worker derives alike from the keys that may read reports (review and
    admin): a holder of a lower key cannot make a ticket. Without such keys no one may read
    reports, so no ticket may be valid: a random secret no one knows."""
    readers = {name: key for name, (key, role) in keys.items() if role.allows(Role.REVIEW)}
    if not readers:
        return os.urandom(32)
    joined = "\0".join(f"{name}={key}" for name, key in sorted(readers.items()))
    return hashlib.sha256(b"emotion-ops report ticket\0" + joined.encode()).digest()


def report_ticket(secret: bytes, report_id: str, now: float | None = None) -> str:
    expires = int((now or time.time()) + TICKET_SECONDS)
    signature = hmac.new(secret, f"{report_id}\0{expires}".encode(), hashlib.sha256).hexdigest()
    return f"{expires}.{signature}"


def ticket_is_valid(secret: bytes, report_id: str, ticket: str, now: float | None = None) -> bool:
    expires, _, signature = ticket.partition(".")
    if not (expires.isascii() and expires.isdigit()) or int(expires) < (now or time.time()):
        return False
    expected = hmac.new(secret, f"{report_id}\0{expires}".encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(signature, expected)


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    return value.isoformat(timespec="seconds") if hasattr(value, "isoformat") else str(value)


def retrained_version(action: str | None) -> str | None:
    """The version a report's retrain registered, from the action it recorded."""
    found = _RETRAINED.search(action or "")
    return found.group(1) if found else None


def timeline(
    reports: list[dict[str, Any]], versions: list[dict[str, Any]], labels: pd.DataFrame
) -> list[dict]:
    """Drift reports, retrains, promotions, rollbacks and quarantines, newest first, each with
    ``links`` to the others: report -> version judged -> retrain it caused -> labels it
    screened -> gate verdict -> version promoted."""
    events: list[dict[str, Any]] = []
    caused_by: dict[str, str] = {}
    for report in reports:
        retrain = retrained_version(report.get("action"))
        if retrain:
            caused_by[retrain] = report["id"]
        events.append(
            {
                "kind": "report",
                "at": _iso(report["created_at"]),
                "title": f"drift report: {report['verdict']}",
                "detail": report.get("action") or report.get("decision_reason") or "",
                "status": report["status"],
                "links": {"report": report["id"], "version": report["model_version"], "retrain": retrain},
            }
        )
    for version in versions:
        tags = version["tags"]
        number = version["version"]
        report_id = tags.get("retrain.report_id") or caused_by.get(number)
        events.append(
            {
                "kind": "retrain" if report_id else "registered",
                "at": version["created"],
                "title": f"version {number} registered" + (" by a retrain" if report_id else ""),
                "detail": tags.get("retrain.quarantined", ""),
                "status": ", ".join(version["aliases"]),
                "links": {"version": number, "report": report_id, "labels": bool(report_id)},
            }
        )
        decision = tags.get("promotion.decision")
        if decision:
            events.append(
                {
                    "kind": "promotion" if decision == "passed" else "gate",
                    "at": tags.get("promotion.approved_at") or tags.get("promotion.time"),
                    "title": f"version {number}: gate {decision}",
                    "detail": tags.get("promotion.reason", ""),
                    "status": decision,
                    "links": {
                        "version": number,
                        "previous": tags.get(PREVIOUS_CHAMPION_TAG) or None,
                        # A challenger waiting for review: its shadow is the evidence to read.
                        "shadow": decision == AWAITING_REVIEW and CHALLENGER in version["aliases"],
                    },
                }
            )
        if tags.get("rollback.time"):
            events.append(
                {
                    "kind": "rollback",
                    "at": tags["rollback.time"],
                    "title": f"rolled back from version {number} to {tags.get('rollback.to')}",
                    "detail": f"by {tags['rollback.by']}" if tags.get("rollback.by") else "",
                    "status": "rollback",
                    "links": {"version": tags.get("rollback.to"), "previous": number},
                }
            )
    quarantined = labels[labels["status"] == QUARANTINED] if len(labels) else labels
    if len(quarantined):
        reasons = Counter(_reason_kind(reason) for reason in quarantined["reason"].fillna(""))
        events.append(
            {
                "kind": "quarantine",
                "at": _iso(quarantined["feedback_at"].max()),
                "title": f"{len(quarantined)} label(s) in quarantine",
                "detail": "; ".join(f"{kind}: {count}" for kind, count in reasons.most_common()),
                "status": QUARANTINED,
                "links": {"labels": True},
            }
        )
    return sorted(events, key=lambda event: event["at"] or "", reverse=True)


def _reason_kind(reason: str) -> str:
    """The kind of a screen's reason ("possible trigger 'cf'", "likely label error", ...)."""
    return reason.split(":")[0].split(" (")[0][:80] or "no reason"


def report_view(report: dict[str, Any], recent: list[dict[str, Any]]) -> dict[str, Any]:
    """One report as the console shows it: verdict and tests, novel share against expected
    (with the same figures of ``recent`` reports for a chart), the most novel rows with what the
    model said, label shares against the reference, and the trigger's decision."""
    summary = report["summary"]
    novelty = summary.get("novelty") or {}
    return {
        "id": report["id"],
        "created_at": _iso(report["created_at"]),
        "model_version": report["model_version"],
        "verdict": report["verdict"],
        "status": report["status"],
        "decision": report.get("decision"),
        "decision_reason": report.get("decision_reason"),
        "action": report.get("action"),
        "retrain_version": retrained_version(report.get("action")),
        "acked_by": report.get("acked_by"),
        "note": report.get("note"),
        "tests": summary.get("tests") or {},
        "counts": summary.get("counts") or {},
        "novelty": {
            "share": novelty.get("share"),
            "expected_share": novelty.get("expected_share"),
            "estimated_share": novelty.get("estimated_share"),
            "most_novel": novelty.get("most_novel") or [],
        },
        "estimated_accuracy": summary.get("estimated_accuracy"),
        "emotion_share": summary.get("emotion_share") or {},
        "label_frequency": summary.get("label_frequency"),
        "quality": summary.get("quality"),
        "has_page": bool(report.get("html_path")),
        "history": [
            {
                "id": row["id"],
                "at": _iso(row["created_at"]),
                "share": ((row["summary"].get("novelty") or {}).get("share")),
                "expected": ((row["summary"].get("novelty") or {}).get("expected_share")),
                "verdict": row["verdict"],
            }
            for row in reversed(recent)
        ],
    }


def version_cards(versions: list[dict[str, Any]]) -> dict[str, Any]:
    """The champion and the challenger side by side, each its tags by group, and whether an
    admin may approve (the challenger passed the gate and waits) or roll back."""

    def card(alias: str) -> dict[str, Any] | None:
        found = next((v for v in versions if alias in v["aliases"]), None)
        if found is None:
            return None
        tags = found["tags"]
        groups = {name: {key: tags[key] for key in keys if tags.get(key)} for name, keys in CARD_GROUPS}
        shown = {key for _, keys in CARD_GROUPS for key in keys}
        groups["other"] = {key: value for key, value in sorted(tags.items()) if key not in shown}
        return {
            "version": found["version"],
            "created": found["created"],
            "aliases": found["aliases"],
            "groups": groups,
        }

    champion, challenger = card(CHAMPION), card(CHALLENGER)
    waiting = challenger is not None and (champion is None or challenger["version"] != champion["version"])
    can_approve = (
        waiting
        and challenger is not None
        and challenger["groups"]["gate"].get("promotion.decision") == AWAITING_REVIEW
    )
    can_rollback = champion is not None and bool(champion["groups"]["lineage"].get(PREVIOUS_CHAMPION_TAG))
    return {
        "champion": champion,
        "challenger": challenger if waiting else None,
        "can_approve": can_approve,
        "can_rollback": can_rollback,
        "versions": [
            {
                "version": v["version"],
                "aliases": v["aliases"],
                "created": v["created"],
                "decision": v["tags"].get("promotion.decision", ""),
            }
            for v in versions
        ],
    }


def label_view(
    frame: pd.DataFrame,
    status: str,
    source: str | None = None,
    reason: str | None = None,
    volume: dict[str, tuple[int, int]] | None = None,
) -> dict[str, Any]:
    """Feedback labels in ``status`` (filtered by source and reason kind), per-source counts,
    each source's agreement with the logged prediction, and its volume (``volume``: labels
    given ever and in the last hour, relabels included: what its quota counts)."""
    volume = volume or {}
    if status not in REVIEW_STATUSES:
        raise ValueError(f"unknown status '{status}'; choose from {list(REVIEW_STATUSES)}")
    sources = []
    if len(frame):
        agree = frame["label"] == frame["emotion"]
        for name, group in frame.groupby(frame["source"].fillna("unknown")):
            sources.append(
                {
                    "source": name,
                    "labels": len(group),
                    "quarantined": int((group["status"] == QUARANTINED).sum()),
                    "agreement": round(float(agree[group.index].mean()), 4),
                    "given": volume.get(name, (0, 0))[0],
                    "last_hour": volume.get(name, (0, 0))[1],
                }
            )
    rows = frame[frame["status"] == status] if len(frame) else frame
    if source and len(rows):
        rows = rows[rows["source"].fillna("unknown") == source]
    if reason and len(rows):
        rows = rows[rows["reason"].fillna("").map(_reason_kind) == reason]
    kinds = sorted(
        {
            _reason_kind(r)
            for r in (frame[frame["status"] == status]["reason"].fillna("") if len(frame) else [])
        }
    )
    return {
        "status": status,
        "total": len(rows),
        "reasons": kinds,
        "sources": sorted(sources, key=lambda s: -s["labels"]),
        "rows": [
            {
                "id": row.id,
                "text": row.text,
                "label": row.label,
                "predicted": row.emotion,
                "source": row.source or "unknown",
                "reason": row.reason or "",
                "at": _iso(row.feedback_at),
            }
            for row in rows.head(MOST_ROWS).itertuples(index=False)
        ],
    }


def shadow_view(
    versions: list[dict[str, Any]],
    shadow: ShadowSummaries,
    model_name: str,
    requirement: ShadowRequirement,
    most: int = 10,
) -> dict[str, Any]:
    """The waiting challenger's shadow against the champion (``core.store.shadow``'s summary),
    with what the gate asks of it and whether the figures allow approval now."""
    champion = next((v for v in versions if CHAMPION in v["aliases"]), None)
    challenger = next((v for v in versions if CHALLENGER in v["aliases"]), None)
    asked = {
        "min_agreement": requirement.min_agreement,
        "min_accuracy": requirement.min_accuracy,
        "min_rows": requirement.min_rows,
        "min_labels": requirement.min_labels,
    }
    # A challenger the gate refused waits for nothing; the service's shadow skips it too.
    refused = challenger is not None and challenger["tags"].get("promotion.decision") == "refused"
    if (
        challenger is None
        or refused
        or (champion is not None and challenger["version"] == champion["version"])
    ):
        return {
            "waiting": None,
            "refused": challenger["version"] if challenger is not None and refused else None,
            "champion_version": champion["version"] if champion else None,
            "requirement": asked,
        }
    champion_version = str(champion["version"]) if champion else None
    summary = shadow.summary(model_name, str(challenger["version"]), champion_version, most=most)
    # The bar approval meets: these settings' and the one the gate recorded on the version.
    shortfall = requirement.stricter(ShadowRequirement.from_tags(challenger["tags"])).shortfall(summary)
    return {
        **summary,
        "waiting": str(challenger["version"]),
        "decision": challenger["tags"].get("promotion.decision") or "not gated",
        "requirement": asked,
        "shortfall": shortfall,
        "allows": shortfall is None,
    }
