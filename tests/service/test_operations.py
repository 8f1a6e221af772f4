"""Operations under traffic: champion swap, API key on/off, PostgreSQL log and its outage."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid

import httpx
import pytest
import sqlalchemy as sa
from mlflow import MlflowClient

from core.settings import TrainingSettings
from tests.utils.factories import TINY_TRAINING
from tests.utils.server import HEADERS, running_service, service_env, service_process
from training.pipeline import train_and_register

POSTGRES_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


class Traffic:
    """Closed-loop clients sending /predict until stopped; records every outcome."""

    def __init__(self, url: str, clients: int = 4):
        self.url = url
        self.stop = threading.Event()
        self.outcomes: list[tuple[int, str | None, str]] = []
        self.timings: list[tuple[float, float]] = []  # (sent, answered), same order as outcomes
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self):
        with httpx.Client(timeout=30, headers=HEADERS) as client:
            while not self.stop.is_set():
                sent = time.monotonic()
                try:
                    response = client.post(self.url + "/predict", json={"text": "i feel happy and glad"})
                except httpx.HTTPError as error:
                    outcome = (0, None, repr(error))
                else:
                    try:  # the status counts even when the body is not JSON
                        body = response.json()
                    except ValueError:
                        body = {}
                    outcome = (response.status_code, body.get("model_version"), body.get("request_id"))
                self.outcomes.append(outcome)
                self.timings.append((sent, time.monotonic()))

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)


def _wait_for(condition, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return False


def test_alias_flip_under_traffic_fails_no_request(service_url, registry, tiny_base_model, tiny_data):
    settings = TrainingSettings(var_dir=registry)
    outcome = train_and_register(
        settings, TINY_TRAINING, str(tiny_data), str(tiny_base_model), with_baseline=False, progress=False
    )
    assert httpx.get(service_url + "/model", headers=HEADERS).json()["version"] == "1"
    with Traffic(service_url) as traffic:
        assert _wait_for(lambda: len(traffic.outcomes) >= 10, 30)  # traffic flows before the flip
        MlflowClient(settings.tracking_uri).set_registered_model_alias(
            settings.model_name, "champion", outcome.model_version
        )
        assert _wait_for(lambda: any(v == outcome.model_version for _, v, _ in traffic.outcomes[-20:]), 60)
        time.sleep(1.0)
    statuses = {status for status, _, _ in traffic.outcomes}
    versions = [version for _, version, _ in traffic.outcomes]
    assert statuses == {200}, [o for o in traffic.outcomes if o[0] != 200][:5]
    assert "1" in versions and outcome.model_version in versions
    # Once a request has been answered by the new version, no request sent later gets the old one.
    swapped_at = min(
        answered
        for (_, version, _), (_, answered) in zip(traffic.outcomes, traffic.timings, strict=True)
        if version == outcome.model_version
    )
    later = [
        version
        for (_, version, _), (sent, _) in zip(traffic.outcomes, traffic.timings, strict=True)
        if sent > swapped_at
    ]
    assert later and set(later) == {outcome.model_version}
    assert httpx.get(service_url + "/model", headers=HEADERS).json()["version"] == outcome.model_version


def test_api_key_required_when_set(registry, tmp_path):
    key = "test-key-" + uuid.uuid4().hex
    env = service_env(registry, EMOTION_API_KEY=key)
    with running_service(env, tmp_path / "serve.log") as url:
        assert httpx.post(url + "/predict", json={"text": "i am happy"}).status_code == 401
        wrong = httpx.post(url + "/predict", json={"text": "i am happy"}, headers={"x-api-key": "nope"})
        assert wrong.status_code == 401 and wrong.json() == {"error": "missing or invalid x-api-key header"}
        ok = httpx.post(url + "/predict", json={"text": "i am happy"}, headers={"x-api-key": key})
        assert ok.status_code == 200
        assert httpx.get(url + "/model").status_code == 401
        assert httpx.get(url + "/model", headers={"x-api-key": key}).status_code == 200
        for open_path in ("/livez", "/readyz", "/metrics"):
            assert httpx.get(url + open_path).status_code == 200
    assert key not in (tmp_path / "serve.log").read_text()


@pytest.fixture
def postgres_database():
    """A fresh database on the local PostgreSQL server, dropped afterwards."""
    try:
        admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(sa.text("select 1"))
    except Exception as error:
        pytest.skip(f"PostgreSQL is not reachable at 127.0.0.1:5432: {error}")
    name = "emotion_ops_" + uuid.uuid4().hex[:10]
    with admin.connect() as connection:
        connection.execute(sa.text(f'create database "{name}"'))
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    _postgres("start")
    admin.dispose()  # pooled connections died with the restart
    _wait_for(_postgres_answers, 30)
    with admin.connect() as connection:
        connection.execute(sa.text(f'drop database if exists "{name}" with (force)'))
    admin.dispose()


def _postgres_answers() -> bool:
    engine = sa.create_engine(POSTGRES_ADMIN_URL)
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("select 1"))
        return True
    except Exception:
        return False
    finally:
        engine.dispose()


def _postgres(action: str) -> None:
    version = subprocess.run(["ls", "/etc/postgresql"], capture_output=True, text=True).stdout.split()[0]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action],
        check=False,
        capture_output=True,
    )


def _count_rows(url: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return connection.execute(sa.text("select count(*) from predictions")).scalar_one()
    finally:
        engine.dispose()


def test_postgres_log_survives_a_database_outage(registry, postgres_database, tmp_path):
    if not shutil.which("pg_ctlcluster"):
        pytest.skip("pg_ctlcluster is not available to stop and start PostgreSQL")
    env = service_env(registry, EMOTION_PREDICTION_LOG_URL=postgres_database)
    with running_service(env, tmp_path / "serve.log") as url:
        first = httpx.post(url + "/predict", json={"text": "i feel happy"}, headers=HEADERS).json()
        assert _wait_for(lambda: _count_rows(postgres_database) == 1, 20)

        with Traffic(url, clients=2) as traffic:
            time.sleep(1.0)
            _postgres("stop")
            time.sleep(4.0)  # predictions keep flowing while the database is down
            during = len(traffic.outcomes)
            _postgres("start")
            assert _wait_for(_postgres_answers, 30)
            time.sleep(1.0)
        statuses = {status for status, _, _ in traffic.outcomes}
        assert statuses == {200}
        assert during > 0
        sent = 1 + len(traffic.outcomes)
        # Spooled rows are replayed once the database is back: none lost, none doubled.
        assert _wait_for(lambda: _count_rows(postgres_database) == sent, 60, interval=1.0), (
            _count_rows(postgres_database),
            sent,
        )
        feedback = httpx.post(
            url + "/feedback", json={"request_id": first["request_id"], "label": "joy"}, headers=HEADERS
        )
        assert feedback.status_code == 200
    engine = sa.create_engine(postgres_database)
    with engine.connect() as connection:
        ids = {row[0] for row in connection.execute(sa.text("select id from predictions"))}
        label = connection.execute(
            sa.text("select feedback_label from predictions where id = :id"), {"id": first["request_id"]}
        ).scalar_one()
    engine.dispose()
    assert {request_id for _, _, request_id in traffic.outcomes} | {first["request_id"]} == ids
    assert label == "joy"


def test_sigterm_under_load_with_two_workers_drains_and_every_answer_is_logged(
    registry, postgres_database, tmp_path
):
    """The default layout (two workers, a cold model cache, PostgreSQL), stopped the way a
    container runtime stops it: SIGTERM to PID 1, which `emotion-ops serve` hands to BentoML."""
    cold = tmp_path / "var"
    shutil.copytree(
        registry, cold, ignore=shutil.ignore_patterns("model-cache", "bentoml", "predictions.db*")
    )
    env = {**service_env(cold, EMOTION_PREDICTION_LOG_URL=postgres_database), "EMOTION_WORKERS": "2"}
    with service_process(env, tmp_path / "serve.log") as (url, process):
        with Traffic(url, clients=8) as traffic:
            time.sleep(3.0)
            answered_before = len(traffic.outcomes)
            stopped_at = time.monotonic()
            process.send_signal(signal.SIGTERM)
            exit_code = process.wait(timeout=45)
            stopped_in = time.monotonic() - stopped_at
            time.sleep(0.5)  # clients now meet a closed port
        assert exit_code == 0, (tmp_path / "serve.log").read_text()[-3000:]
    statuses = [status for status, _, _ in traffic.outcomes]
    answered = {request_id for status, _, request_id in traffic.outcomes if status == 200}
    assert answered_before > 20 and len(answered) >= answered_before
    assert not [status for status in statuses if status >= 500], statuses
    engine = sa.create_engine(postgres_database)
    with engine.connect() as connection:
        logged = {row[0] for row in connection.execute(sa.text("select id from predictions"))}
    engine.dispose()
    assert answered <= logged, f"{len(answered - logged)} answered rows were not logged"
    assert stopped_in < 45
    with socket.socket() as probe:  # nothing is left holding the port
        assert probe.connect_ex(("127.0.0.1", int(url.rsplit(":", 1)[1]))) != 0
