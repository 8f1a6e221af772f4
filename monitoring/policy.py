"""The retrain trigger's policy, pure: from a drift verdict, live accuracy, new labels and the
last trigger's time to a decision with its reason. The settings map onto the policies here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from core.settings import MonitorSettings, monitor_default
from monitoring.drift import DriftPolicy


def drift_policy(settings: MonitorSettings) -> DriftPolicy:
    return DriftPolicy(
        drift_share=settings.drift_share,
        false_alarm_rate=settings.drift_false_alarm_rate,
        distance_threshold=settings.drift_distance_threshold,
        text_threshold=settings.drift_text_threshold,
        min_rows=settings.drift_min_rows,
        sample_rows=settings.drift_sample_rows,
        sample_bytes=settings.drift_sample_bytes,
    )


def retrain_policy(settings: MonitorSettings) -> RetrainPolicy:
    return RetrainPolicy(
        accuracy_floor=settings.live_accuracy_floor,
        min_new_labels=settings.retrain_min_new_labels,
        cooldown=timedelta(hours=settings.retrain_cooldown_hours),
        min_accuracy_labels=settings.live_accuracy_min_labels,
    )


@dataclass(frozen=True)
class RetrainPolicy:
    # The defaults are the settings' (MonitorSettings).
    accuracy_floor: float = monitor_default("live_accuracy_floor")
    min_new_labels: int = monitor_default("retrain_min_new_labels")
    cooldown: timedelta = timedelta(hours=monitor_default("retrain_cooldown_hours"))
    min_accuracy_labels: int = monitor_default("live_accuracy_min_labels")  # not one row's say


@dataclass(frozen=True)
class RetrainDecision:
    retrain: bool
    reason: str


def retrain_decision(
    policy: RetrainPolicy,
    dataset_drift: bool | None,
    live_accuracy: float | None,
    new_labels: int,
    last_triggered_at: datetime | None,
    now: datetime,
    labelled_rows: int | None = None,
) -> RetrainDecision:
    """Retrain when drift is detected or live accuracy is under the floor, given enough new
    labelled rows to learn from, and not more often than the cooldown allows.

    Live accuracy counts only over at least ``policy.min_accuracy_labels`` labelled rows of the
    window (``labelled_rows``; None means enough): a handful of labels says nothing."""
    causes, notes = [], []
    if dataset_drift:
        causes.append("dataset drift detected")
    if live_accuracy is not None and labelled_rows is not None and labelled_rows < policy.min_accuracy_labels:
        notes.append(
            f"live accuracy {live_accuracy:.4f} ignored: {labelled_rows} labelled rows in the window "
            f"(need {policy.min_accuracy_labels})"
        )
        live_accuracy = None
    if live_accuracy is not None and live_accuracy < policy.accuracy_floor:
        causes.append(f"live accuracy {live_accuracy:.4f} is below the floor {policy.accuracy_floor:.4f}")
    if not causes:
        if dataset_drift is None and live_accuracy is None:
            reason = "no verdict: not enough data in the window and no labels"
        else:
            accuracy = (
                "" if live_accuracy is None else f", live accuracy {live_accuracy:.4f} clears the floor"
            )
            reason = f"no drift{accuracy}"
        return RetrainDecision(False, "; ".join([reason, *notes]))
    cause = " and ".join(causes)
    if new_labels < policy.min_new_labels:
        return RetrainDecision(
            False,
            f"{cause}, but only {new_labels} new labelled rows (need {policy.min_new_labels}); "
            "collect feedback through POST /feedback",
        )
    if last_triggered_at is not None and now - last_triggered_at < policy.cooldown:
        next_allowed = last_triggered_at + policy.cooldown
        return RetrainDecision(
            False, f"{cause}, but the cooldown lasts until {next_allowed.isoformat(timespec='seconds')}"
        )
    return RetrainDecision(True, f"{cause}; {new_labels} new labelled rows")
