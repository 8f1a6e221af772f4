"""The loop closed end to end with the tiny model and the real service: shifted traffic with
feedback → drift report → retrain → gate → champion moves → the running service serves it.
A failing gate leaves the champion alone; webhook mode hands the decision to a URL instead.

The steps share one registry and one running service, and run in file order.
"""

from __future__ import annotations

import json
import random
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar

import httpx
import pytest

from core.registry import CHAMPION
from core.settings import CoreSettings, MonitorSettings
from core.store import ReportIndex, Store
from core.store.reports import STATUS_ACKNOWLEDGED, STATUS_RETRAIN_TRIGGERED
from tests.utils.cli import cli, registry_client
from tests.utils.factories import CUE_WORDS, FILLER_WORDS, TINY_TRAINING
from tests.utils.server import HEADERS, running_service, service_env

MODEL = "emotion-classifier"
# A challenger this weak cannot clear a 0.5 macro-F1 floor.
UNDERTRAINED = {"max_steps": 1, "learning_rate": 1e-6, "max_length": 32, "seed": 3}
WELL_TRAINED = TINY_TRAINING.model_dump(
    include={"epochs", "learning_rate", "batch_size", "patience", "max_length"}
)


@pytest.fixture(scope="module")
def loop_env(registry, tiny_data, tiny_base_model, pushgateway_url) -> dict[str, str]:
    return service_env(
        registry,
        EMOTION_DATA_DIR=str(tiny_data),
        EMOTION_BASE_MODEL=str(tiny_base_model),
        EMOTION_DRIFT_MIN_ROWS="50",
        EMOTION_RETRAIN_MIN_NEW_LABELS="30",
        EMOTION_RETRAIN_COOLDOWN_HOURS="0",
        EMOTION_RETRAIN_AUTO_PROMOTE="true",
        EMOTION_LIVE_ACCURACY_MIN_LABELS="10",
        EMOTION_PUSHGATEWAY_URL=pushgateway_url,
    )


@pytest.fixture(scope="module")
def service_url(registry, loop_env, tmp_path_factory):
    with running_service(loop_env, tmp_path_factory.mktemp("logs") / "serve.log") as url:
        yield url


@pytest.fixture
def env(loop_env, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no .env of the checkout
    for name, value in loop_env.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def champion_version() -> str:
    return str(registry_client().get_model_version_by_alias(MODEL, CHAMPION).version)


def send_shifted_traffic(url: str, count: int, seed: int) -> None:
    """Long anger and fear texts, each with its true label sent back as feedback."""
    rng = random.Random(seed)
    texts, labels = [], []
    for index in range(count):
        label = ("anger", "fear")[index % 2]
        words = [*rng.choices(FILLER_WORDS, k=8), *rng.sample(CUE_WORDS[label], 2)]
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(label)
    with httpx.Client(base_url=url, timeout=60, headers=HEADERS) as client:
        predictions = []
        for start in range(0, count, 50):
            response = client.post("/predict_batch", json={"texts": texts[start : start + 50]})
            assert response.status_code == 200, response.text
            predictions += response.json()
        for prediction, label in zip(predictions, labels, strict=True):
            answer = client.post("/feedback", json={"request_id": prediction["request_id"], "label": label})
            assert answer.status_code == 200, answer.text


def test_an_empty_window_is_not_enough_data(env, service_url):
    result = cli("drift")
    assert result.exit_code == 0, result.output
    assert "NOT ENOUGH DATA" in result.output
    assert "a verdict needs 50" in result.output


def test_bad_drift_and_report_arguments_get_clear_errors(env, service_url):
    for args, message in [
        (("drift", "--rows", "10", "--since", "1h"), "either --rows or --since/--until"),
        (("drift", "--since", "yesterday"), "neither an ISO time"),
        (("drift", "--since", "1h", "--until", "2h"), "--since must be before --until"),
        (("reports", "ack", "no-such-report"), "no drift report 'no-such-report'"),
        (("reports", "list", "--status", "closed"), "unknown status 'closed'"),
    ]:
        result = cli(*args)
        assert result.exit_code == 2, result.output
        assert message in result.output and "Traceback" not in result.output


def test_a_failing_gate_leaves_the_champion_untouched(env, service_url):
    env.setenv("EMOTION_RETRAIN_CONFIG", json.dumps(UNDERTRAINED))
    env.setenv("EMOTION_PROMOTION_FLOOR", "0.5")
    send_shifted_traffic(service_url, 120, seed=1)

    result = cli("monitor", "--once")
    assert result.exit_code == 0, result.output
    assert "DRIFT" in result.output and "trigger: RETRAIN: dataset drift detected" in result.output
    assert "retrained version 2" in result.output and "refused by the gate" in result.output
    assert champion_version() == "1"

    report = _reports().latest()
    assert report["status"] == STATUS_RETRAIN_TRIGGERED and report["decision"] == "retrain"
    assert "below the floor" in report["action"]


def retrain_past_a_lenient_gate(env, service_url: str, seed: int) -> str:
    """Shifted traffic with feedback, then one monitor cycle that retrains a well-trained model
    against a gate that passes it; returns the cycle's output."""
    env.setenv("EMOTION_RETRAIN_CONFIG", json.dumps(WELL_TRAINED))
    env.setenv("EMOTION_PROMOTION_FLOOR", "0.0")
    env.setenv("EMOTION_PROMOTION_TOLERANCE", "1.0")
    # Shifted anger and fear feedback makes every cue word enriched and tied, so the screen
    # raises them to the gate; the tiny challenger, trained mostly on anger and fear, is steered
    # by them far more than the champion (67 % against 3-37 %). The behaviour test has its own
    # test (tests/monitoring/test_labels.py, the trigger case); here it is lenient too.
    env.setenv("EMOTION_GATE_TRIGGER_TOLERANCE", "1.0")
    env.setenv("EMOTION_GATE_RAISED_TOLERANCE", "1.0")
    send_shifted_traffic(service_url, 120, seed=seed)
    result = cli("monitor", "--once")
    assert result.exit_code == 0, result.output
    return result.output


def test_drift_retrains_promotes_and_the_running_service_serves_the_new_champion(env, service_url):
    output = retrain_past_a_lenient_gate(env, service_url, seed=2)
    assert "retrained version 3" in output and "promoted to champion" in output
    assert champion_version() == "3"

    deadline = time.monotonic() + 60
    while httpx.get(f"{service_url}/model", headers=HEADERS).json()["version"] != "3":
        assert time.monotonic() < deadline, "the service never picked up the new champion"
        time.sleep(0.5)
    answer = httpx.post(
        f"{service_url}/predict", json={"text": "i feel so furious and mad"}, headers=HEADERS
    ).json()
    assert answer["model_version"] == "3"

    # The service links the report and shows what the trigger did.
    listed = httpx.get(f"{service_url}/reports", headers=HEADERS).json()["reports"]
    assert listed[0]["status"] == STATUS_RETRAIN_TRIGGERED and "promoted" in listed[0]["action"]
    page = httpx.get(f"{service_url}/reports/latest", headers=HEADERS)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "drift" in page.text.lower()
    assert httpx.get(f"{service_url}/reports/nope", headers=HEADERS).status_code == 404
    assert 'href="/reports/latest"' in httpx.get(f"{service_url}/ui").text


def test_without_auto_promotion_a_feedback_model_waits_as_challenger(env, service_url):
    env.setenv("EMOTION_RETRAIN_AUTO_PROMOTE", "false")  # the default
    output = retrain_past_a_lenient_gate(env, service_url, seed=4)
    assert "retrained version 4" in output and "waits as challenger" in output
    # Judged on the curated test split and on the held-out feedback, each on its own.
    assert "test split: pass" in output and "held-out feedback: pass" in output
    assert champion_version() == "3"
    assert str(registry_client().get_model_version_by_alias(MODEL, "challenger").version) == "4"
    assert "emotion-ops promote" in _reports().latest()["action"]


def test_reviewers_list_show_and_acknowledge_reports(env, service_url):
    listed = cli("reports", "list")
    assert (
        listed.exit_code == 0 and "retrain-triggered" in listed.output and "not_enough_data" in listed.output
    )

    shown = cli("reports", "show", "latest")
    summary = json.loads(shown.output)
    assert summary["verdict"] == "drift" and summary["review"]["decision"] == "retrain"
    assert "waits as challenger" in summary["review"]["action"]

    index = _reports()
    empty_window = next(row for row in index.list(50) if row["verdict"] == "not_enough_data")
    acked = cli("reports", "ack", empty_window["id"], "--by", "reviewer", "--note", "no traffic yet")
    assert acked.exit_code == 0 and "acknowledged by reviewer" in acked.output
    assert index.get(empty_window["id"])["status"] == STATUS_ACKNOWLEDGED
    # Acknowledging a report the trigger acted on keeps that status.
    cli("reports", "ack", summary["report_id"], "--by", "reviewer")
    assert index.get(summary["report_id"])["status"] == STATUS_RETRAIN_TRIGGERED


class _Receiver(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[dict, str | None]]] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.received.append((body, self.headers.get("authorization")))
        self.send_response(202)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_webhook_mode_posts_the_decision_instead_of_retraining(env, service_url):
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env.setenv("EMOTION_RETRAIN_MODE", "webhook")
    env.setenv("EMOTION_RETRAIN_WEBHOOK_URL", f"http://127.0.0.1:{server.server_port}/retrain")
    env.setenv("EMOTION_RETRAIN_WEBHOOK_TOKEN", "s3cret")
    send_shifted_traffic(service_url, 60, seed=3)
    try:
        result = cli("monitor", "--once")
    finally:
        server.shutdown()
    assert result.exit_code == 0, result.output
    assert "answered 202" in result.output
    assert champion_version() == "3"  # nothing retrained here
    ((payload, authorization),) = _Receiver.received
    assert authorization == "Bearer s3cret"
    assert payload["event"] == "retrain_requested" and "dataset drift detected" in payload["reason"]
    assert payload["report"]["model"] == {"name": MODEL, "version": "3"}
    assert payload["report"]["verdict"] == "drift"


def _reports() -> ReportIndex:
    return Store.open(CoreSettings().log_store_url).reports


def test_a_failed_webhook_starts_no_cooldown_and_the_report_hides_its_url(env, service_url):
    server = HTTPServer(("127.0.0.1", 0), _Refuser)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env.setenv("EMOTION_RETRAIN_MODE", "webhook")
    env.setenv("EMOTION_RETRAIN_WEBHOOK_ATTEMPTS", "2")
    env.setenv("EMOTION_RETRAIN_WEBHOOK_URL", f"http://127.0.0.1:{server.server_port}/retrain?key=hidden")
    send_shifted_traffic(service_url, 60, seed=5)
    try:
        result = cli("monitor", "--once")
    finally:
        server.shutdown()
    assert result.exit_code == 0, result.output
    assert "failed: retrain webhook failed after 2 attempt(s): answered 500" in result.output
    report = _reports().latest()
    assert report["status"] != STATUS_RETRAIN_TRIGGERED and report["triggered_at"] is None
    assert "hidden" not in report["action"] and "127.0.0.1" not in report["action"]
    assert _Refuser.calls == 2


class _Refuser(BaseHTTPRequestHandler):
    calls = 0

    def do_POST(self):
        self.rfile.read(int(self.headers["content-length"]))
        type(self).calls += 1
        self.send_response(500)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_drift_run_reads_each_text_cut_to_the_sample_byte_bound(registry, tmp_path):
    """However long the logged texts, the job reads each one cut to its share of
    EMOTION_DRIFT_SAMPLE_BYTES (in the database, before it is sent)."""
    from monitoring.drift import sample_text_chars
    from monitoring.job import run_drift
    from monitoring.policy import drift_policy
    from tests.utils.factories import logged_row

    settings = MonitorSettings(
        var_dir=registry,
        prediction_log_url=f"sqlite:///{tmp_path / 'log.db'}",
        reports_dir=tmp_path / "reports",
        drift_sample_rows=100,
        drift_sample_bytes=100_000,
        drift_min_rows=1000,  # no Evidently report needed to see what was read
    )
    store = Store.open(settings.log_store_url)
    now = datetime.now(UTC)
    store.predictions.insert_many(
        [
            logged_row(created_at=now, model_name=MODEL, text="long " * 2_000, truncated=True, tokens=32)
            for _ in range(120)  # 10,000 characters each
        ]
    )
    result = run_drift(settings, model_version="1", push=False, store=store)
    counts = result.summary()["counts"]
    assert counts["window_rows"] == 120 and counts["analysed_rows"] == 100
    assert counts["longest_text_chars"] == sample_text_chars(drift_policy(settings)) == 64
