"""Start the real ``bentoml serve`` on a loopback port for a test, and stop it afterwards."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_service(env: dict[str, str], log_path: Path, timeout: float = 180.0):
    """Yield the base URL of a ``bentoml serve`` process once /readyz answers 200."""
    port = free_port()
    bentoml = Path(sys.executable).with_name("bentoml")
    full_env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", **env}
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [
                str(bentoml),
                "serve",
                "service.service:EmotionService",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            cwd=REPO_ROOT,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process, log_path, timeout, full_env.get("EMOTION_API_KEY"))
        yield url
    finally:
        # SIGTERM lets the service flush its prediction log before exiting.
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _wait_ready(
    url: str, process: subprocess.Popen, log_path: Path, timeout: float, api_key: str | None
) -> None:
    headers = {"x-api-key": api_key} if api_key else {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"bentoml serve exited with {process.returncode}:\n{log_path.read_text()[-4000:]}"
            )
        try:
            ready = httpx.get(f"{url}/readyz", timeout=2.0).status_code == 200
            # /readyz can answer before the dependent model service has loaded its model.
            if ready and httpx.get(f"{url}/labels", headers=headers, timeout=10.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"service not ready after {timeout:.0f} s:\n{log_path.read_text()[-4000:]}")
