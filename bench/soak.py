"""Soak benchmark (``emotion-ops soak`` / ``make soak``; not a test): the served champion in the
default layout (two workers) logging to PostgreSQL, under the 32-client closed-loop load for a
long run, with PostgreSQL stopped for a minute in the middle.

It prints what production cares about after such a run: 5xx answers, rows answered against
rows logged (none may be lost: the outage's rows are spooled and replayed), and the resident
memory of every process at the start and at the end.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import sqlalchemy as sa

from bench.processes import bentoml_ready, free_port, processor_name, running_process
from core.settings import ServiceSettings
from core.store import Store
from service.launch import serve_command

TEXTS = (
    "i feel so happy and glad today",
    "i am furious about what they did",
    "i am scared of what comes next",
    "i love you more than words can say",
    "i feel lonely and sad tonight",
    "wow, i did not expect that at all",
)


@dataclass
class SoakLoad:
    url: str
    api_key: str
    clients: int
    stop: threading.Event = field(default_factory=threading.Event)
    statuses: Counter = field(default_factory=Counter)
    answered: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self) -> list[threading.Thread]:
        threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(self.clients)]
        for thread in threads:
            thread.start()
        return threads

    def _client(self, index: int) -> None:
        headers = {"x-api-key": self.api_key}
        with httpx.Client(base_url=self.url, headers=headers, timeout=60) as client:
            count = 0
            while not self.stop.is_set():
                text = f"{TEXTS[(index + count) % len(TEXTS)]} ({index}-{count})"
                count += 1
                try:
                    response = client.post("/predict", json={"text": text})
                    status = response.status_code
                    request_id = response.json().get("request_id") if status == 200 else None
                except (httpx.HTTPError, ValueError):
                    status, request_id = 0, None
                with self.lock:
                    self.statuses[status] += 1
                    if request_id:
                        self.answered.add(request_id)


def _postgres(action: str) -> None:
    """Stop or start this machine's PostgreSQL cluster (starting a running one is a no-op)."""
    version = sorted(os.listdir("/etc/postgresql"))[0]
    done = subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0 and "already running" not in done.stderr + done.stdout:
        raise RuntimeError(f"pg_ctlcluster {action} failed: {done.stderr.strip() or done.stdout.strip()}")


def _rss_by_process(pid: int) -> dict[str, float]:
    """RSS in MB of the arbiter and each worker, named by role."""
    import psutil

    root = psutil.Process(pid)
    sizes = {"arbiter": root.memory_info().rss / 1e6}
    for child in root.children(recursive=True):
        command = " ".join(child.cmdline())
        name = (
            f"worker {command.split('--worker-id ')[1].split()[0]}"
            if "--worker-id" in command
            else child.name()
        )
        sizes[name] = child.memory_info().rss / 1e6
    return sizes


def _logged(url: str) -> set[str]:
    store = Store.connect(url)
    try:
        return store.predictions.ids()
    finally:
        store.engine.dispose()


def run(
    settings: ServiceSettings,
    seconds: float = 600,
    clients: int = 32,
    outage_seconds: float = 60,
    admin_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    progress=print,
) -> dict:
    work = settings.var_dir / "soak"
    work.mkdir(parents=True, exist_ok=True)
    database = "soak_" + uuid.uuid4().hex[:8]
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'create database "{database}"'))
    log_url = admin_url.rsplit("/", 1)[0] + f"/{database}"
    api_key = secrets.token_hex(16)
    port = free_port()
    serving = settings.model_copy(update={"port": port, "host": "127.0.0.1"})
    command, env = serve_command(serving)
    env = {
        **env,
        "EMOTION_PORT": str(port),
        "EMOTION_PREDICTION_LOG_URL": log_url,
        "EMOTION_API_KEY": api_key,
    }
    url = f"http://127.0.0.1:{port}"
    outage_at = max(0.0, seconds / 2 - outage_seconds / 2)
    try:
        with running_process(command, env, bentoml_ready(url, api_key), work / "serve.log", 300) as process:
            load = SoakLoad(url, api_key, clients)
            threads = load.run()
            time.sleep(min(10.0, seconds / 10))  # warm: the first requests load and export
            rss_start = _rss_by_process(process.pid)
            started = time.monotonic()
            with load.lock:
                warmup_requests = sum(load.statuses.values())
            progress(f"soak: {clients} clients for {seconds:.0f} s; PostgreSQL down at {outage_at:.0f} s")
            outage = None
            while (elapsed := time.monotonic() - started) < seconds:
                if outage is None and elapsed >= outage_at:
                    _postgres("stop")
                    outage = time.monotonic()
                    progress(f"soak: PostgreSQL stopped at {elapsed:.0f} s")
                if outage and outage > 0 and time.monotonic() - outage >= outage_seconds:
                    _postgres("start")
                    outage = -1.0
                    progress(f"soak: PostgreSQL started at {elapsed:.0f} s")
                time.sleep(0.5)
            if outage and outage > 0:
                _postgres("start")
            with load.lock:
                measured_requests = sum(load.statuses.values()) - warmup_requests
            load.stop.set()
            for thread in threads:
                thread.join(timeout=90)
            rss_end = _rss_by_process(process.pid)
            # Spooled rows replay every few seconds once the database is back.
            deadline = time.monotonic() + 180
            while not load.answered <= (logged := _logged(log_url)) and time.monotonic() < deadline:
                time.sleep(2)
        # After SIGTERM: the writers flushed what they still held.
        logged = _logged(log_url)
    finally:
        _postgres("start")
        admin.dispose()  # its pooled connections died with the restart
        with admin.connect() as connection:
            connection.execute(sa.text(f'drop database if exists "{database}" with (force)'))
        admin.dispose()

    results = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": processor_name(),
        "seconds": seconds,
        "clients": clients,
        "outage_seconds": outage_seconds,
        "requests": sum(load.statuses.values()),
        "requests_per_second": round(measured_requests / seconds, 1),
        "statuses": {str(k): v for k, v in sorted(load.statuses.items())},
        "server_errors": sum(v for k, v in load.statuses.items() if k >= 500),
        "answered": len(load.answered),
        "logged": len(logged),
        "lost": len(load.answered - logged),
        "rss_mb": {
            name: [round(rss_start.get(name, 0), 1), round(rss_end.get(name, 0), 1)] for name in rss_end
        },
    }
    (work / "results.json").write_text(json.dumps(results, indent=2))
    (work / "results.md").write_text(to_markdown(results))
    return results


def to_markdown(results: dict) -> str:
    lines = [
        f"# Soak: {results['clients']} clients for {results['seconds']:.0f} s, PostgreSQL down "
        f"{results['outage_seconds']:.0f} s ({results['cpu']}, {results['when']})",
        "",
        "| requests (with warm-up) | req/s (measured) | 5xx | other non-200 | answered | logged | lost |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    other = sum(v for k, v in results["statuses"].items() if k != "200" and not k.startswith("5"))
    rate = results["requests_per_second"]
    lines.append(
        f"| {results['requests']} | {rate:.1f} | {results['server_errors']} | {other} "
        f"| {results['answered']} | {results['logged']} | {results['lost']} |"
    )
    lines += ["", "| process | RSS start MB | RSS end MB | growth |", "| --- | ---: | ---: | ---: |"]
    for name, (start, end) in results["rss_mb"].items():
        growth = f"{(end - start) / start * 100:+.1f} %" if start else "-"
        lines.append(f"| {name} | {start:.1f} | {end:.1f} | {growth} |")
    return "\n".join(lines) + "\n"
