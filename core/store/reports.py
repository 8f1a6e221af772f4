"""The report index: one row per drift run, in the store beside the prediction log.

It lives beside the ``predictions`` table so that the service (which links the latest report),
the monitor job and a reviewer's CLI all see the same index, whether that store is the embedded
SQLite file or a shared PostgreSQL. A report's status moves from ``open`` to ``acknowledged``
(a reviewer looked at it) or ``retrain-triggered`` (the trigger acted on it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from core.store.schema import drift_reports

STATUS_OPEN = "open"
STATUS_ACKNOWLEDGED = "acknowledged"
STATUS_RETRAIN_TRIGGERED = "retrain-triggered"
STATUSES = (STATUS_OPEN, STATUS_ACKNOWLEDGED, STATUS_RETRAIN_TRIGGERED)

# The one list of a report's columns that the service's /reports and the CLI's table show.
LISTED_FIELDS = (
    "id",
    "created_at",
    "model_version",
    "verdict",
    "drifted_share",
    "window_rows",
    "labelled_rows",
    "live_accuracy",
    "status",
    "decision",
    "decision_reason",
    "action",
)
# What the trigger decided and did, and what a reviewer said.
DECISION_FIELDS = ("status", "decision", "decision_reason", "action")
REVIEW_FIELDS = (*DECISION_FIELDS, "triggered_at", "acked_by", "acked_at", "note")


class ReportNotFound(LookupError):
    pass


@dataclass
class ReportIndex:
    engine: Engine

    def add(self, summary: dict[str, Any]) -> None:
        quality = summary.get("quality") or {}
        with self.engine.begin() as connection:
            connection.execute(
                drift_reports.insert().values(
                    id=summary["report_id"],
                    created_at=datetime.fromisoformat(summary["created_at"]),
                    model_name=summary["model"]["name"],
                    model_version=summary["model"]["version"],
                    verdict=summary["verdict"],
                    dataset_drift=summary["dataset_drift"],
                    drifted_share=summary["drifted_share"],
                    window_rows=summary["counts"]["window_rows"],
                    labelled_rows=summary["counts"]["labelled_rows"],
                    live_accuracy=quality.get("accuracy"),
                    status=STATUS_OPEN,
                    html_path=summary.get("html"),
                    summary=summary,
                )
            )

    def get(self, report_id: str) -> dict[str, Any]:
        with self.engine.connect() as connection:
            row = connection.execute(drift_reports.select().where(drift_reports.c.id == report_id)).first()
        if row is None:
            raise ReportNotFound(f"no drift report '{report_id}'; 'emotion-ops reports list' shows them")
        return dict(row._mapping)

    def list(
        self,
        limit: int = 20,
        status: str | None = None,
        model_name: str | None = None,
        model_version: str | None = None,
    ) -> list[dict[str, Any]]:
        query = drift_reports.select().order_by(drift_reports.c.created_at.desc()).limit(limit)
        if status:
            query = query.where(drift_reports.c.status == status)
        if model_name:
            query = query.where(drift_reports.c.model_name == model_name)
        if model_version:
            query = query.where(drift_reports.c.model_version == model_version)
        with self.engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(query)]

    def find(self, report_id: str) -> dict[str, Any] | None:
        """A report by id, or the newest for ``latest``; None when there is none."""
        if report_id == "latest":
            return self.latest()
        try:
            return self.get(report_id)
        except ReportNotFound:
            return None

    def named(self, report_id: str) -> dict[str, Any]:
        """A report by id, or the newest for ``latest``; ``ReportNotFound`` when there is none."""
        if report_id != "latest":
            return self.get(report_id)
        report = self.latest()
        if report is None:
            raise ReportNotFound("no drift reports yet; run 'emotion-ops drift'")
        return report

    def latest(self) -> dict[str, Any] | None:
        rows = self.list(limit=1)
        return rows[0] if rows else None

    def acknowledge(self, report_id: str, by: str, note: str | None = None) -> dict[str, Any]:
        """Mark a report as reviewed. A report the trigger already acted on keeps that status."""
        report = self.get(report_id)
        values = {"acked_by": by, "acked_at": datetime.now(UTC), "note": note}
        if report["status"] == STATUS_OPEN:
            values["status"] = STATUS_ACKNOWLEDGED
        self._update(report_id, **values)
        return self.get(report_id)

    def record_decision(self, report_id: str, retrain: bool, reason: str) -> None:
        self._update(report_id, decision="retrain" if retrain else "hold", decision_reason=reason)

    def mark_triggered(self, report_id: str, action: str) -> None:
        self._update(
            report_id, status=STATUS_RETRAIN_TRIGGERED, triggered_at=datetime.now(UTC), action=action
        )

    def record_action(self, report_id: str, action: str) -> None:
        self._update(report_id, action=action)

    def last_triggered_at(self, model_name: str) -> datetime | None:
        query = sa.select(sa.func.max(drift_reports.c.triggered_at)).where(
            drift_reports.c.model_name == model_name
        )
        with self.engine.connect() as connection:
            value = connection.execute(query).scalar_one_or_none()
        return _aware(value)

    def _update(self, report_id: str, **values: object) -> None:
        with self.engine.begin() as connection:
            updated = connection.execute(
                drift_reports.update().where(drift_reports.c.id == report_id).values(**values)
            ).rowcount
        if not updated:
            raise ReportNotFound(f"no drift report '{report_id}'")


def reviewed(report: dict[str, Any]) -> dict[str, Any]:
    """A report as a reviewer reads it: its summary, with its review and trigger fields (times
    in ISO form) under ``review``."""
    review = {
        key: (value.isoformat() if isinstance(value, datetime) else value)
        for key, value in report.items()
        if key in REVIEW_FIELDS
    }
    return {**report["summary"], "review": review}


def listing(report: dict[str, Any]) -> dict[str, Any]:
    """A report row as the service's /reports lists it."""
    return {key: report[key] for key in LISTED_FIELDS}


def _aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every time we store is UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value
