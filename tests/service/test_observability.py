"""Every Grafana panel is wired to a real series: a real Prometheus (Debian's) scrapes the real
service and a real Pushgateway with the stack's own config and rules; after bounded traffic and
one drift run, each panel query from the dashboard JSON must return data."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.deploy.test_prometheus_and_grafana_config import GRAFANA, PROMETHEUS, run, tool
from tests.utils.binaries import running_prometheus
from tests.utils.cli import cli
from tests.utils.server import HEADERS, running_service, service_env

TEXTS = ["i feel so happy and glad", "i am afraid and nervous", "the it and", "i am so mad", "i love it"]


def prometheus_config(service: str, pushgateway: str, folder: Path) -> Path:
    """The stack's prometheus.yml with loopback targets, 2 s scrapes and absolute rule paths."""
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    # Not faster: BentoML's multiprocess /metrics can take over a second on a busy 2-core box,
    # and a scrape that times out leaves a gap exactly where the traffic is.
    config["global"].update(scrape_interval="2s", scrape_timeout="2s", evaluation_interval="2s")
    config["rule_files"] = [str(PROMETHEUS / path) for path in config["rule_files"]]
    config.pop("alerting")
    targets = {"emotion-service": service, "pushgateway": pushgateway}
    config["scrape_configs"] = [job for job in config["scrape_configs"] if job["job_name"] in targets]
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [targets[job["job_name"]].removeprefix("http://")]}]
    path = folder / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    run(tool("promtool", "prometheus"), "check", "config", str(path))
    return path


@pytest.fixture(scope="module")
def stack(registry, pushgateway_url, tmp_path_factory):
    folder = tmp_path_factory.mktemp("observability")
    # Every prediction counts as uncertain, so the uncertain-share panel has a series too.
    env = service_env(registry, EMOTION_UNCERTAIN_BELOW="0.99")
    with (
        running_service(env, folder / "serve.log") as service,
        running_prometheus(prometheus_config(service, pushgateway_url, folder), folder) as prometheus,
    ):
        yield service, prometheus


def send_traffic(service: str, prometheus: str) -> None:
    """Traffic spread over several scrapes that start after Prometheus' first one: a counter's
    increments only show in rate() between two samples Prometheus has seen."""
    deadline = time.monotonic() + 30
    while not httpx.get(f"{prometheus}/api/v1/query", params={"query": "up == 1"}).json()["data"]["result"]:
        assert time.monotonic() < deadline, "Prometheus never scraped its targets"
        time.sleep(0.5)
    with httpx.Client(base_url=service, timeout=60, headers=HEADERS) as client:
        for _ in range(8):
            for text in TEXTS:
                request_id = client.post("/predict", json={"text": text}).json()["request_id"]
            assert client.post("/predict_batch", json={"texts": TEXTS}).status_code == 200
            assert client.post("/predict", json={"text": ""}).status_code == 400
            feedback = {"request_id": request_id, "label": "love"}
            assert client.post("/feedback", json=feedback).status_code == 200
            time.sleep(2.5)


def panel_queries() -> list[tuple[str, str, str]]:
    queries = []
    for path in sorted((GRAFANA / "dashboards").glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                queries.append((path.name, panel["title"], target["expr"]))
    return queries


def test_every_dashboard_panel_query_returns_data(stack, registry, pushgateway_url, monkeypatch, tmp_path):
    service, prometheus = stack
    send_traffic(service, prometheus)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EMOTION_VAR_DIR", str(registry))
    monkeypatch.setenv("EMOTION_DRIFT_MIN_ROWS", "10")
    monkeypatch.setenv("EMOTION_PUSHGATEWAY_URL", pushgateway_url)
    drift = cli("drift")
    assert drift.exit_code == 0 and "labelled" in drift.output, drift.output

    queries = panel_queries()
    assert len(queries) >= 20
    deadline = time.monotonic() + 90
    pending = list(queries)
    while pending and time.monotonic() < deadline:
        still = []
        for board, title, expr in pending:
            result = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}).json()
            assert result["status"] == "success", (board, title, expr, result)
            values = [float(item["value"][1]) for item in result["data"]["result"]]
            if not any(not math.isnan(value) for value in values):
                still.append((board, title, expr))
        pending = still
        if pending:
            time.sleep(2)
    targets = httpx.get(f"{prometheus}/api/v1/targets").json()["data"]["activeTargets"]
    health = [(t["labels"]["job"], t["health"], t["lastError"]) for t in targets]
    assert not pending, f"panels without data (targets: {health}):\n" + "\n".join(
        f"{b} / {t}: {e}" for b, t, e in pending
    )

    # The alert rules loaded and are evaluated against the same series.
    rules = httpx.get(f"{prometheus}/api/v1/rules").json()["data"]["groups"]
    assert {rule["name"] for group in rules for rule in group["rules"]} >= {
        "EmotionServiceDown",
        "emotion:request_latency_seconds:p95",
    }
    assert all(rule["health"] == "ok" for group in rules for rule in group["rules"])
