"""The production form, rehearsed as processes: there is no Docker engine here, so the image is a
wheel installed (not editable) into a fresh virtual environment and started the way
deploy/Dockerfile starts it, from another folder; docker-compose.yml is every service's own
command with its compose environment, on loopback.

What differs from the containers, and why:
- the fresh environment finds its dependencies in the test run's environment (a path file
  after its own site-packages) instead of installing them again; the project's own code comes
  only from the wheel (asserted);
- services listen on free loopback ports instead of compose's names and fixed ports;
- PostgreSQL is the machine's server (trust auth) with two fresh databases, not the postgres
  image with its password;
- the bootstrap trains the tiny test model on the tiny data set, with a floor of 0, so the
  rehearsal takes seconds, not the quick profile's minutes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
import yaml

from bench.processes import answers, free_port, running_process
from tests.deploy.test_compose_and_k8s import FILLED, compose_config, env_file
from tests.deploy.test_prometheus_and_grafana_config import tool
from tests.utils.binaries import running_binary, running_pushgateway
from tests.utils.postgres import fresh_postgres_database
from tests.utils.server import service_process

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "rehearsal-key-0123456789"


# What deploy/Dockerfile copies into its wheel stage, and nothing else.
IMAGE_SOURCES = (
    "pyproject.toml",
    "README.md",
    "core",
    "training",
    "monitoring",
    "service",
    "bench",
    "emotion_ops",
)


def install_wheel(folder: Path) -> Path:
    """Build the project's wheel from exactly what the Dockerfile copies (a checkout's stale
    build/ or egg-info could hide a missing package-data entry) and install it, not editable,
    into a fresh venv; return the venv's bin folder."""
    source = folder / "src"
    for name in IMAGE_SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            source.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    wheels = folder / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            ".",
        ],
        check=True,
        cwd=source,
    )
    venv = folder / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    (wheel,) = wheels.glob("emotion_ops-*.whl")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True)
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # Dependencies from this environment, after the venv's own site-packages. A plain path line
    # does not run that folder's .pth files, so the checkout's editable install stays out.
    Path(site, "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv / "bin"


@pytest.fixture(scope="module")
def image_bin(tmp_path_factory) -> Path:
    return install_wheel(tmp_path_factory.mktemp("image"))


def test_the_image_runs_only_installed_code_with_its_package_data(image_bin, tmp_path):
    probe = subprocess.run(
        [
            str(image_bin / "python"),
            "-c",
            "import core, service, bench, emotion_ops, monitoring, training, service.service as s; "
            "from training.label_sets import label_set_named; "
            "print(service.__file__); print(len(s.UI_PAGE), len(s.DOCS_PAGE)); "
            "print(len(label_set_named('six').map['goemotions']), len(label_set_named('ekman').labels))",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "EMOTION_VAR_DIR": str(tmp_path / "var")},
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    location, sizes, label_sets = probe.stdout.split("\n")[:3]
    assert str(image_bin.parent) in location and str(ROOT) not in location
    assert all(int(size) > 100 for size in sizes.split())
    assert label_sets.split() == ["18", "7"]  # training/label_sets.json travels in the wheel


def test_the_image_refuses_an_open_interface_without_a_key(image_bin, tmp_path):
    # The Dockerfile's environment: EMOTION_HOST=0.0.0.0; compose passes an unset key as "".
    env = {**os.environ, "EMOTION_HOST": "0.0.0.0", "EMOTION_API_KEY": "", "EMOTION_VAR_DIR": str(tmp_path)}
    env.pop("EMOTION_ALLOW_ANONYMOUS", None)
    done = subprocess.run(
        [str(image_bin / "emotion-ops"), "serve"], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert done.returncode == 2
    assert "no API key" in done.stderr and "Traceback" not in done.stderr


def compose_services(tmp_path: Path) -> dict:
    done = compose_config(env_file(tmp_path, **FILLED))
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)["services"]


def loopback(url: str, names: dict[str, str]) -> str:
    """A compose URL with its service names swapped for the rehearsal's loopback addresses."""
    for name, address in names.items():
        url = url.replace(f"//{name}:", f"//{address}:").replace(f"@{name}:", f"@{address}:")
    return url


def test_compose_as_processes_serves_scrapes_pushes_and_loads_every_rule(
    image_bin, tiny_data, tiny_base_model, tmp_path
):
    services = compose_services(tmp_path)
    with ExitStack() as stack:
        mlflow_db = stack.enter_context(fresh_postgres_database("rehearsal_mlflow_"))
        predictions_db = stack.enter_context(fresh_postgres_database("rehearsal_predictions_"))
        (tmp_path / "pushgateway").mkdir()
        pushgateway = stack.enter_context(running_pushgateway(tmp_path / "pushgateway"))

        # MLflow: compose's command and environment, on a loopback port.
        mlflow_port = free_port()
        mlflow_env = {
            **os.environ,
            **services["mlflow"]["environment"],
            "MLFLOW_BACKEND_STORE_URI": mlflow_db,
        }
        # Compose's allowed hosts name port 5000; the rehearsal's port is another one.
        mlflow_env["MLFLOW_SERVER_ALLOWED_HOSTS"] += f",127.0.0.1:{mlflow_port}"
        command = [
            str(Path(sys.executable).with_name("mlflow")) if arg == "mlflow" else arg
            for arg in services["mlflow"]["command"]
        ]
        command = [
            {"--host=0.0.0.0": "--host=127.0.0.1", "--port=5000": f"--port={mlflow_port}"}.get(arg, arg)
            for arg in command
        ]
        command = [arg.replace("=/mlartifacts", f"={tmp_path / 'mlartifacts'}") for arg in command]
        mlflow_url = f"http://127.0.0.1:{mlflow_port}"
        stack.enter_context(
            running_process(
                command, mlflow_env, lambda: answers(f"{mlflow_url}/health"), tmp_path / "mlflow.log", 120
            )
        )
        # Clients in compose call it by its service name: MLflow must take that Host header.
        search = f"{mlflow_url}/api/2.0/mlflow/experiments/search?max_results=1"
        named = httpx.get(search, headers={"host": "mlflow:5000"})
        assert named.status_code == 200, named.text
        assert httpx.get(search, headers={"host": "evil.example:5000"}).status_code == 403

        clean = {k: v for k, v in os.environ.items() if not k.startswith(("EMOTION_", "MLFLOW_"))}
        names = {"mlflow": "127.0.0.1", "postgres": "127.0.0.1", "pushgateway": "127.0.0.1"}
        rehearsal = {
            "MLFLOW_TRACKING_URI": mlflow_url,
            "EMOTION_PREDICTION_LOG_URL": predictions_db,
            "EMOTION_PUSHGATEWAY_URL": pushgateway,
            "EMOTION_DATA_DIR": str(tiny_data),
            "EMOTION_REPORTS_DIR": str(tmp_path / "var" / "reports"),
            # The Dockerfile's environment, with the volume in a temp folder.
            "EMOTION_VAR_DIR": str(tmp_path / "var"),
            "TOKENIZERS_PARALLELISM": "false",
            # Test-only: the tiny model trains in seconds and clears a floor of 0.
            "EMOTION_BASE_MODEL": str(tiny_base_model),
            "EMOTION_PROMOTION_FLOOR": "0",
            "EMOTION_DRIFT_MIN_ROWS": "20",
        }

        def environment_of(name: str) -> dict[str, str]:
            """A compose service's environment on loopback, with the rehearsal's addresses."""
            composed = {
                key: loopback(str(value), names) for key, value in services[name]["environment"].items()
            }
            return {**clean, **composed, **rehearsal}

        def run_from_image(name: str, command: list[str]) -> str:
            """A one-shot command of the installed wheel with compose service ``name``'s
            environment; returns its output once it exits 0."""
            done = subprocess.run(
                [str(image_bin / command[0]), *command[1:]],
                env=environment_of(name),
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
            return done.stdout

        # Bootstrap: compose's one-shot command.
        assert "champion:" in run_from_image("bootstrap", services["bootstrap"]["command"])

        # The service: compose's command and environment (two workers by default), with a key.
        service_env = {**environment_of("service"), "EMOTION_API_KEY": API_KEY, "EMOTION_HOST": "127.0.0.1"}
        assert services["service"]["command"] == ["emotion-ops", "serve"]
        service_url, _ = stack.enter_context(
            service_process(
                service_env, tmp_path / "service.log", executable=image_bin / "emotion-ops", cwd=tmp_path
            )
        )
        headers = {"x-api-key": API_KEY}
        with httpx.Client(base_url=service_url, headers=headers, timeout=60) as client:
            answer = client.post("/predict", json={"text": "i feel so happy and glad"})
            assert answer.status_code == 200, answer.text
            batch = client.post("/predict_batch", json={"texts": ["i am scared"] * 30})
            assert batch.status_code == 200
            feedback = client.post(
                "/feedback", json={"request_id": answer.json()["request_id"], "label": "joy"}
            )
            assert feedback.status_code == 200, feedback.text

        # Alertmanager: compose's entrypoint renders its config; then its binary on loopback.
        script = services["alertmanager"]["command"][0].split("&& exec")[0].replace("$$", "$")
        rendered = tmp_path / "alertmanager.yml"
        script = script.replace("> /alertmanager/alertmanager.yml", f"> {rendered}").replace(
            "/config/alertmanager.yml.tmpl",
            str(ROOT / "monitoring" / "alertmanager" / "alertmanager.yml.tmpl"),
        )
        subprocess.run(
            ["/bin/sh", "-c", script], env={**clean, **services["alertmanager"]["environment"]}, check=True
        )
        alertmanager = stack.enter_context(
            running_binary(
                "prometheus-alertmanager",
                [
                    f"--config.file={rendered}",
                    f"--storage.path={tmp_path / 'alertmanager'}",
                    "--web.listen-address={address}",
                    "--cluster.listen-address=",
                ],
                tmp_path / "alertmanager.log",
                package="prometheus-alertmanager",
            )
        )

        # Prometheus: compose's own config, its targets swapped for the loopback addresses.
        prometheus_dir = tmp_path / "prometheus"
        shutil.copytree(ROOT / "monitoring" / "prometheus", prometheus_dir)
        config = yaml.safe_load((prometheus_dir / "prometheus.yml").read_text())
        config["global"].update(scrape_interval="2s", evaluation_interval="2s")
        targets = {
            "service:3000": service_url.removeprefix("http://"),
            "pushgateway:9091": pushgateway.removeprefix("http://"),
            "alertmanager:9093": alertmanager.removeprefix("http://"),
        }
        text = yaml.safe_dump(config)
        for compose_target, address in targets.items():
            text = text.replace(compose_target, address)
        (prometheus_dir / "prometheus.yml").write_text(text)
        prometheus_port = free_port()
        prometheus_url = f"http://127.0.0.1:{prometheus_port}"
        stack.enter_context(
            running_process(
                [
                    tool("prometheus", "prometheus"),
                    f"--config.file={prometheus_dir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{prometheus_port}",
                ],
                dict(os.environ),
                lambda: answers(f"{prometheus_url}/-/ready"),
                tmp_path / "prometheus.log",
                60,
            )
        )

        # The monitor job, once (the CronJob's form; compose runs the same cycle on a timer).
        assert services["monitor"]["command"] == ["emotion-ops", "monitor"]
        assert "trigger:" in run_from_image("monitor", ["emotion-ops", "monitor", "--once"])

        def query(expr: str) -> list:
            return httpx.get(f"{prometheus_url}/api/v1/query", params={"query": expr}).json()["data"][
                "result"
            ]

        deadline = time.monotonic() + 60
        while not (
            query('up{job="emotion-service"} == 1')
            and query("emotion_drift_last_run_timestamp_seconds")
            and query("emotion_predictions_total")
        ):
            assert time.monotonic() < deadline, json.dumps(
                httpx.get(f"{prometheus_url}/api/v1/targets").json()["data"]["activeTargets"]
            )[:3000]
            time.sleep(1)
        groups = httpx.get(f"{prometheus_url}/api/v1/rules").json()["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        expected = sum(
            len(group["rules"])
            for name in ("recording.yml", "alerts.yml")
            for group in yaml.safe_load((ROOT / "monitoring" / "prometheus" / "rules" / name).read_text())[
                "groups"
            ]
        )
        assert len(rules) == expected and all(rule["health"] != "err" for rule in rules), rules
        managers = httpx.get(f"{prometheus_url}/api/v1/alertmanagers").json()["data"]["activeAlertmanagers"]
        assert [manager["url"] for manager in managers] == [f"{alertmanager}/api/v2/alerts"]


def test_the_rehearsal_builds_from_what_the_dockerfile_copies():
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    wheel_stage = dockerfile.split("FROM ")[1]
    copied = [
        word for line in wheel_stage.splitlines() if line.startswith("COPY ") for word in line.split()[1:-1]
    ]
    assert tuple(copied) == IMAGE_SOURCES
