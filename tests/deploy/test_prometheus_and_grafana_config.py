"""Prometheus, Alertmanager and Grafana configuration checked by their own tools (Debian's
promtool and amtool), the alert rules unit-tested with ``promtool test rules``, and the
dashboard JSON checked against the code that generates it."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from monitoring.grafana import dashboards

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "monitoring" / "prometheus"
ALERTMANAGER_TEMPLATE = ROOT / "monitoring" / "alertmanager" / "alertmanager.yml.tmpl"
GRAFANA = ROOT / "monitoring" / "grafana"


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is not installed; run: apt-get install {package}")
    return path


def run(*command: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_prometheus_config_and_rules_pass_promtool():
    promtool = tool("promtool", "prometheus")
    output = run(promtool, "check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert "SUCCESS" in output
    rules = sorted(str(path) for path in (PROMETHEUS / "rules").glob("*.yml"))
    assert "SUCCESS" in run(promtool, "check", "rules", *rules)


def test_every_alert_fires_and_clears_in_promtool_unit_tests():
    promtool = tool("promtool", "prometheus")
    tests_file = PROMETHEUS / "tests" / "alerts_test.yml"
    assert "SUCCESS" in run(promtool, "test", "rules", str(tests_file))
    alerts = {
        rule["alert"]
        for group in yaml.safe_load((PROMETHEUS / "rules" / "alerts.yml").read_text())["groups"]
        for rule in group["rules"]
    }
    tested = {
        case["alertname"]
        for test in yaml.safe_load(tests_file.read_text())["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    cleared = {
        case["alertname"]
        for test in yaml.safe_load(tests_file.read_text())["tests"]
        for case in test["alert_rule_test"]
        if not case["exp_alerts"]
    }
    assert alerts == tested == cleared
    assert alerts == {
        "EmotionServiceDown",
        "EmotionHigh5xxRatio",
        "EmotionLatencyP95OverSLO",
        "EmotionDriftDetected",
        "EmotionNovelTraffic",
        "EmotionLiveAccuracyBelowFloor",
        "EmotionEstimatedAccuracyBelowFloor",
        "EmotionPredictionLogWriteFailures",
        "EmotionNoTraffic",
        "EmotionDriftJobStale",
        "EmotionPredictionLogSpoolFilling",
        "EmotionPredictionLogRowsLost",
    }


def render_alertmanager_config(webhook_url: str) -> str:
    """What the containers' entrypoint does with sed: the webhook URL from the environment."""
    return ALERTMANAGER_TEMPLATE.read_text().replace("${ALERT_WEBHOOK_URL}", webhook_url)


def test_alertmanager_config_sends_to_the_webhook_from_the_environment(tmp_path):
    amtool = tool("amtool", "prometheus-alertmanager")
    rendered = tmp_path / "alertmanager.yml"
    rendered.write_text(render_alertmanager_config("https://hooks.example.com/emotion-ops"))
    assert "SUCCESS" in run(amtool, "check-config", str(rendered))
    config = yaml.safe_load(rendered.read_text())
    (receiver,) = config["receivers"]
    assert receiver["webhook_configs"][0]["url"] == "https://hooks.example.com/emotion-ops"


def test_dashboard_json_is_what_the_code_generates():
    for name, content in dashboards.render().items():
        committed = (GRAFANA / "dashboards" / name).read_text()
        assert committed == content, f"{name} is stale: run python -m monitoring.grafana.dashboards"


@pytest.mark.parametrize("name", sorted(dashboards.DASHBOARDS))
def test_dashboards_use_the_provisioned_datasource(name):
    provisioned = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    uid = provisioned["datasources"][0]["uid"]
    board = json.loads((GRAFANA / "dashboards" / name).read_text())
    assert board["uid"] and board["panels"]
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == uid and target["expr"]
