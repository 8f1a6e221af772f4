"""The monitor job: store → drift → policy → action, and the figures to Prometheus.

``run_drift`` is one report (``emotion-ops drift``); ``monitor_once`` adds the trigger, and
``monitor_forever`` repeats it every ``monitor_interval_seconds`` (``emotion-ops monitor``, the
job docker-compose and the Kubernetes CronJob run).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime

from core.registry import CHAMPION, RegistryError, connect, download_version, version_by_alias
from core.settings import MonitorSettings
from core.store import Store, TrafficWindow
from monitoring.drift import DriftResult, analyse, sample_text_chars
from monitoring.policy import RetrainDecision, drift_policy, retrain_decision, retrain_policy
from monitoring.push import push_drift_metrics
from monitoring.webhook import WebhookFailed, post_webhook

log = logging.getLogger(__name__)


def run_drift(
    settings: MonitorSettings,
    rows: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    model_version: str | None = None,
    push: bool = True,
    store: Store | None = None,
) -> DriftResult:
    """One drift report over a window of one model version's traffic (default: the champion's
    last ``drift_window_rows`` rows), indexed in the log store and pushed when configured."""
    client = connect(settings)
    if model_version is None:
        champion = version_by_alias(client, settings.model_name, CHAMPION)
        if champion is None:
            raise RegistryError(
                f"'{settings.model_name}' has no '{CHAMPION}'; pass --model-version or promote a model"
            )
        version = champion
    else:
        version = client.get_model_version(settings.model_name, model_version)
    bundle = download_version(client, settings, version)
    window = TrafficWindow(
        model_name=settings.model_name,
        model_version=str(version.version),
        rows=None if (since or until) else (rows or settings.drift_window_rows),
        since=since,
        until=until,
    )
    store = store or Store.open(settings.log_store_url)
    policy = drift_policy(settings)
    multilabel = bundle.task == "multilabel"
    result = analyse(
        store.predictions.stream_window(
            window, max_chars=sample_text_chars(policy), with_probabilities=multilabel
        ),
        window,
        bundle.reference(),
        bundle.labels,
        settings.model_name,
        policy,
        settings.reports_root,
        thresholds=bundle.thresholds if multilabel else None,
        expected_novel_share=bundle.expected_novel_share,
        recent_novelty=_recent_novelty(store, settings.model_name, str(version.version)),
    )
    store.reports.add(result.summary())
    if push:
        push_metrics(settings, result, retrain_triggered=False)
    return result


def _recent_novelty(store: Store, model_name: str, model_version: str, reports: int = 10) -> list[dict]:
    """The novelty share of this version's recent reports, oldest first: a trend, not one point."""
    rows = [
        row
        for row in store.reports.list(reports, model_name=model_name, model_version=model_version)
        if (row["summary"] or {}).get("novelty")
    ]
    return [
        {
            "report_id": row["id"],
            "created_at": row["summary"]["created_at"],
            "share": row["summary"]["novelty"]["share"],
        }
        for row in reversed(rows)
    ]


def push_metrics(settings: MonitorSettings, result: DriftResult, retrain_triggered: bool) -> None:
    if not settings.pushgateway_url:
        return
    try:
        push_drift_metrics(settings.pushgateway_url, result, retrain_triggered)
    except OSError as error:  # the report stands; the drift-job-stale alert covers a lasting outage
        log.warning("could not push drift metrics to %s: %s", settings.pushgateway_url, error)


@dataclass(frozen=True)
class MonitorOutcome:
    result: DriftResult
    decision: RetrainDecision
    action: str | None


def monitor_once(settings: MonitorSettings) -> MonitorOutcome:
    """A drift report, then the retrain decision and its action, all recorded on the report."""
    store = Store.open(settings.log_store_url)
    index = store.reports
    result = run_drift(settings, push=False, store=store)
    last_triggered = index.last_triggered_at(settings.model_name)
    now = datetime.now(UTC)
    decision = retrain_decision(
        retrain_policy(settings),
        result.dataset_drift,
        result.live_accuracy,
        store.predictions.count_new_labels(settings.model_name, last_triggered),
        last_triggered,
        now,
        labelled_rows=result.labelled_rows,
    )
    if decision.retrain and settings.retrain_mode == "off":
        decision = RetrainDecision(False, f"{decision.reason}; retrain_mode is 'off'")
    index.record_decision(result.report_id, decision.retrain, decision.reason)
    action = None
    triggered = False
    if decision.retrain and settings.retrain_mode == "webhook":
        # Marked only once the receiver took it: a webhook that failed starts no cooldown, so
        # the next cycle asks again.
        action = _call_webhook(settings, result, decision)
        triggered = not action.startswith("failed")
        if triggered:
            index.mark_triggered(result.report_id, action)
        index.record_action(result.report_id, action)
    elif decision.retrain:
        # Marked before acting: a local retrain that crashes midway still starts the cooldown,
        # so a broken retrain is not re-run every interval.
        index.mark_triggered(result.report_id, "local retrain started")
        triggered = True
        action = _retrain_locally(settings, store, result.report_id)
        index.record_action(result.report_id, action)
    push_metrics(settings, result, retrain_triggered=triggered)
    return MonitorOutcome(result, decision, action)


def _call_webhook(settings: MonitorSettings, result: DriftResult, decision: RetrainDecision) -> str:
    if not settings.retrain_webhook_url:
        return "failed: retrain_mode is 'webhook' but EMOTION_RETRAIN_WEBHOOK_URL is not set"
    token = settings.retrain_webhook_token
    payload = {"event": "retrain_requested", "reason": decision.reason, "report": result.summary()}
    try:
        return post_webhook(
            settings.retrain_webhook_url,
            payload,
            token.get_secret_value() if token else None,
            timeout=settings.retrain_webhook_timeout_seconds,
            attempts=settings.retrain_webhook_attempts,
        )
    except WebhookFailed as error:
        log.warning("%s", error)
        return f"failed: {error}"


def _retrain_locally(settings: MonitorSettings, store: Store, report_id: str) -> str:
    # Training brings torch and the training stack: loaded only when a retrain runs.
    from training.retrain import retrain_and_promote

    try:
        return retrain_and_promote(settings, store.predictions, report_id=report_id)
    except Exception as error:  # recorded on the report for the reviewer; the loop goes on
        log.exception("retrain action failed")
        return f"failed: {type(error).__name__}: {error}"


def monitor_forever(settings: MonitorSettings, stop: threading.Event | None = None, on_outcome=None) -> None:
    """Run ``monitor_once`` every ``monitor_interval_seconds`` until ``stop`` is set.

    A failing cycle (registry or store down) is logged and retried at the next interval.
    """
    stop = stop or threading.Event()
    while not stop.is_set():
        try:
            outcome = monitor_once(settings)
            if on_outcome:
                on_outcome(outcome)
        except Exception:
            log.exception("monitor cycle failed; retrying in %.0f s", settings.monitor_interval_seconds)
        stop.wait(settings.monitor_interval_seconds)
