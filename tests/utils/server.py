"""Start the real ``bentoml serve`` on a loopback port for a test, and stop it afterwards."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path

from emotion_ops.processes import bentoml_ready, free_port, running_process

REPO_ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def running_service(env: dict[str, str], log_path: Path, timeout: float = 180.0):
    """Yield the base URL of a ``bentoml serve`` process once it serves its model."""
    port = free_port()
    bentoml = Path(sys.executable).with_name("bentoml")
    full_env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", **env}
    url = f"http://127.0.0.1:{port}"
    command = [
        str(bentoml),
        "serve",
        "service.service:EmotionService",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    ready = bentoml_ready(url, full_env.get("EMOTION_API_KEY"))
    with running_process(command, full_env, ready, log_path, timeout, cwd=REPO_ROOT):
        yield url
