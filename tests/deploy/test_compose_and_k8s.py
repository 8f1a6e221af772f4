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


def published(port) -> tuple[str, int]:
    """(host address, host port) of a compose port: docker-compose 1.x prints a port with an
    address as "127.0.0.1:9090:9090/tcp" and one without as a mapping."""
    if isinstance(port, dict):
        return port.get("host_ip", "0.0.0.0"), int(port["published"])
    host_ip, host_port, _ = port.split("/")[0].rsplit(":", 2)
    return host_ip, int(host_port)


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
    assert compose["services"]["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"].startswith(
        "postgresql+psycopg://"
    )
    assert compose["services"]["monitor"]["command"] == ["emotion-ops", "monitor"]
    ports = {
        name: [published(p)[1] for p in spec.get("ports", [])] for name, spec in compose["services"].items()
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


def k8s_documents() -> list[dict]:
    return [
        doc
        for path in K8S.glob("*.yaml")
        if path.name != "kustomization.yaml"
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def test_kubernetes_workloads_have_probes_resources_autoscaling_and_a_cronjob():
    documents = k8s_documents()
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
    assert [ref["configMapRef"]["name"] for ref in container["envFrom"]] == ["emotion-ops-config"]
    secrets = {item["name"]: item["valueFrom"]["secretKeyRef"] for item in container["env"]}
    # Not MLflow's URL: only the secrets this pod uses.
    assert set(secrets) == {"EMOTION_PREDICTION_LOG_URL", "EMOTION_API_KEY", "EMOTION_API_KEYS"}
    assert all(ref["name"] == "emotion-ops-secrets" for ref in secrets.values())
    # Only the extra named keys may be missing from the Secret; the rest must be there.
    assert [name for name, ref in secrets.items() if ref.get("optional")] == ["EMOTION_API_KEYS"]
    cron = next(d for d in documents if d["kind"] == "CronJob")
    job = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert job["args"] == ["emotion-ops", "monitor", "--once"]


def test_compose_publishes_only_the_service_beyond_loopback_and_keeps_passwords_off_command_lines(compose):
    services = compose["services"]
    for name, service in services.items():
        for port in service.get("ports", []):
            host_ip, _ = published(port)
            if name == "service":
                assert host_ip == "0.0.0.0"  # the one public endpoint, behind its API key
                continue
            assert host_ip == "127.0.0.1", f"{name} publishes {port} beyond loopback"
    assert FILLED["POSTGRES_PASSWORD"] not in " ".join(services["mlflow"]["command"])
    assert FILLED["POSTGRES_PASSWORD"] in services["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"]
    assert "mlflow:5000" in services["mlflow"]["environment"]["MLFLOW_SERVER_ALLOWED_HOSTS"]
    service = services["service"]
    assert service["environment"]["EMOTION_ALLOW_ANONYMOUS"] == "false"
    assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
    assert services["monitor"]["environment"]["EMOTION_RETRAIN_AUTO_PROMOTE"] == "false"


def test_kubernetes_pods_are_locked_down_and_the_spool_outlives_a_pod():
    documents = k8s_documents()
    pods = []
    for doc in documents:
        if doc["kind"] == "Deployment":
            pods.append(doc["spec"]["template"]["spec"])
        elif doc["kind"] == "CronJob":
            pods.append(doc["spec"]["jobTemplate"]["spec"]["template"]["spec"])
    assert len(pods) == 3
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["capabilities"]["drop"] == ["ALL"]
            assert not any("MLFLOW_BACKEND_STORE_URI" in arg for arg in container.get("args", []))
    service = next(
        d for d in documents if d["kind"] == "Deployment" and d["metadata"]["name"] == "emotion-service"
    )
    volumes = {v["name"]: v for v in service["spec"]["template"]["spec"]["volumes"]}
    assert volumes["spool"]["persistentVolumeClaim"]["claimName"] == "emotion-prediction-spool"
    claim = next(
        d
        for d in documents
        if d["kind"] == "PersistentVolumeClaim" and d["metadata"]["name"] == "emotion-prediction-spool"
    )
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert service["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 45
