"""docker-compose.yml and the Kubernetes manifests, checked by real validators: docker-compose's
own `config` (Debian's docker-compose; there is no Docker engine here) and the Kubernetes
OpenAPI schemas bundled with kubernetes-validate."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.deploy.test_prometheus_and_grafana_config import tool

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
K8S = ROOT / "deploy" / "k8s"
FILLED = {
    "POSTGRES_PASSWORD": "test-password",
    "GRAFANA_ADMIN_PASSWORD": "test-admin",
    "ALERT_WEBHOOK_URL": "https://hooks.example.com/a?b=1&c=2",
}


def env_file(folder: Path, **values: str) -> Path:
    """.env.example with the given values filled in, as a user would."""
    lines = []
    for line in (ROOT / ".env.example").read_text().splitlines():
        name = line.split("=", 1)[0]
        lines.append(f"{name}={values[name]}" if name in values and not line.startswith("#") else line)
    path = folder / ".env"
    path.write_text("\n".join(lines) + "\n")
    return path


def compose_config(env: Path) -> subprocess.CompletedProcess:
    clean_env = {k: v for k, v in os.environ.items() if k not in FILLED and not k.startswith("EMOTION_")}
    return subprocess.run(
        [tool("docker-compose", "docker-compose"), "--env-file", str(env), "-f", str(COMPOSE), "config"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=clean_env,
    )


@pytest.fixture(scope="module")
def compose(tmp_path_factory) -> dict:
    done = compose_config(env_file(tmp_path_factory.mktemp("env"), **FILLED))
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


def test_compose_refuses_to_start_without_the_secrets(tmp_path):
    done = compose_config(env_file(tmp_path))
    assert done.returncode != 0
    assert "set POSTGRES_PASSWORD in .env" in done.stderr or "set GRAFANA_ADMIN_PASSWORD" in done.stderr


def test_compose_runs_the_whole_stack(compose):
    assert set(compose["services"]) == {
        "postgres", "mlflow", "bootstrap", "service", "monitor", "prometheus", "pushgateway", "alertmanager",
        "grafana",
    }  # fmt: skip
    service = compose["services"]["service"]
    assert service["environment"]["EMOTION_PREDICTION_LOG_URL"].startswith("postgresql+psycopg://")
    assert "postgresql+psycopg://" in " ".join(compose["services"]["mlflow"]["command"])
    assert compose["services"]["monitor"]["command"] == ["emotion-ops", "monitor"]
    ports = {
        name: [p["published"] for p in spec.get("ports", [])] for name, spec in compose["services"].items()
    }
    assert ports["service"] == [3000] and ports["grafana"] == [
        3001
    ]  # BentoML and Grafana both default to 3000


def test_compose_images_are_pinned_and_services_wait_for_healthy_dependencies(compose):
    for name, spec in compose["services"].items():
        image = spec["image"]
        assert ":" in image and not image.endswith(":latest"), name
        assert "healthcheck" in spec, name  # jobs say so explicitly with disable: true
        if name in {"bootstrap", "monitor"}:
            # docker-compose normalises `disable: true` to test: [NONE]
            assert spec["healthcheck"].get("disable") is True or spec["healthcheck"]["test"] == ["NONE"]
        for dependency, condition in spec.get("depends_on", {}).items():
            assert condition["condition"] in {"service_healthy", "service_completed_successfully"}, (
                name,
                dependency,
            )
    assert (
        compose["services"]["service"]["depends_on"]["bootstrap"]["condition"]
        == "service_completed_successfully"
    )


def test_compose_has_no_secrets_and_mounts_only_files_that_exist():
    raw = yaml.safe_load(COMPOSE.read_text())
    text = COMPOSE.read_text()
    for secret in ("POSTGRES_PASSWORD", "GRAFANA_ADMIN_PASSWORD", "ALERT_WEBHOOK_URL"):
        assert f"${{{secret}:?" in text
    for name, spec in raw["services"].items():
        for volume in spec.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"
    assert ".env" in (ROOT / ".gitignore").read_text().split()


def test_alertmanager_entrypoint_renders_the_webhook_url(tmp_path, compose):
    """Run the compose file's own entrypoint script (minus the exec) and check the result."""
    amtool = tool("amtool", "prometheus-alertmanager")
    # `config` prints the file's $$ escapes as they are; the container's shell gets single $.
    script = compose["services"]["alertmanager"]["command"][0].split("&& exec")[0].replace("$$", "$")
    script = script.replace("> /alertmanager/alertmanager.yml", f"> {tmp_path / 'alertmanager.yml'}")
    template = ROOT / "monitoring" / "alertmanager" / "alertmanager.yml.tmpl"
    script = script.replace("/config/alertmanager.yml.tmpl", str(template))
    url = FILLED["ALERT_WEBHOOK_URL"] + "|x"
    subprocess.run(
        ["/bin/sh", "-c", script], env={"ALERT_WEBHOOK_URL": url, "PATH": os.environ["PATH"]}, check=True
    )
    rendered = yaml.safe_load((tmp_path / "alertmanager.yml").read_text())
    assert rendered["receivers"][0]["webhook_configs"][0]["url"] == url
    check = subprocess.run(
        [amtool, "check-config", str(tmp_path / "alertmanager.yml")], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_kubernetes_manifests_validate_against_the_schemas():
    validator = shutil.which("kubernetes-validate") or str(
        Path(sys.executable).with_name("kubernetes-validate")
    )
    manifests = sorted(str(path) for path in K8S.glob("*.yaml") if path.name != "kustomization.yaml")
    done = subprocess.run(
        [validator, "--strict", "--kubernetes-version", "1.31.0", *manifests], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert {f"{name}" for name in kustomization["resources"]} <= {path.name for path in K8S.glob("*.yaml")}


def test_kubernetes_workloads_have_probes_resources_autoscaling_and_a_cronjob():
    documents = [
        doc
        for path in K8S.glob("*.yaml")
        if path.name != "kustomization.yaml"
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]
    kinds = {(doc["kind"], doc["metadata"]["name"]) for doc in documents}
    expected = {
        ("Deployment", "emotion-service"),
        ("Service", "emotion-service"),
        ("HorizontalPodAutoscaler", "emotion-service"),
        ("CronJob", "emotion-monitor"),
        ("ConfigMap", "emotion-ops-config"),
        ("Secret", "emotion-ops-secrets"),
        ("Deployment", "mlflow"),
    }
    assert expected <= kinds
    service = next(
        d for d in documents if d["kind"] == "Deployment" and d["metadata"]["name"] == "emotion-service"
    )
    container = service["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]
    assert {ref.get("secretRef", ref.get("configMapRef"))["name"] for ref in container["envFrom"]} == {
        "emotion-ops-config", "emotion-ops-secrets"
    }  # fmt: skip
    cron = next(d for d in documents if d["kind"] == "CronJob")
    job = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert job["args"] == ["emotion-ops", "monitor", "--once"]
