"""Start the real service on a loopback port for a test, the way the image does
(``emotion-ops serve``, which execs ``bentoml serve``), and stop it afterwards."""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path

from bench.processes import bentoml_ready, free_port, running_process

REPO_ROOT = Path(__file__).resolve().parents[2]

# Feedback needs a key (labels train models), so the test services run with one, as
# production does.
API_KEY = "test-key-0123456789"
HEADERS = {"x-api-key": API_KEY}
# A second client's key (a labelling vendor): labels record which key they came with.
VENDOR_KEY = "vendor-key-0123456789"


def service_env(var_dir: Path, **extra: str) -> dict[str, str]:
    # One worker: each worker re-resolves the alias on its own clock, and the swap tests check
    # that no request after the swap gets the old model, which holds per worker.
    return {
        "EMOTION_VAR_DIR": str(var_dir),
        "EMOTION_REFRESH_SECONDS": "1",
        "EMOTION_WORKERS": "1",
        "EMOTION_API_KEY": API_KEY,
        "EMOTION_API_KEYS": json.dumps({"vendor-a": VENDOR_KEY}),
        **extra,
    }


@contextmanager
def running_service(env: dict[str, str], log_path: Path, timeout: float = 180.0, **options):
    """Yield the base URL of an ``emotion-ops serve`` process once it serves its model."""
    with service_process(env, log_path, timeout, **options) as (url, _process):
        yield url


@contextmanager
def service_process(
    env: dict[str, str],
    log_path: Path,
    timeout: float = 180.0,
    executable: Path | None = None,
    cwd: Path | None = None,
):
    """Yield the base URL and the process (BentoML's arbiter: ``emotion-ops serve`` execs it)
    of a service that serves its model. ``executable`` is the ``emotion-ops`` to run (default:
    this environment's).
    """
    port = free_port()
    emotion_ops = executable or Path(sys.executable).with_name("emotion-ops")
    full_env = {
        **os.environ,
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "EMOTION_HOST": "127.0.0.1",
        **env,
        "EMOTION_PORT": str(port),
    }
    url = f"http://127.0.0.1:{port}"
    ready = bentoml_ready(url, full_env.get("EMOTION_API_KEY"))
    with running_process(
        [str(emotion_ops), "serve"], full_env, ready, log_path, timeout, cwd=cwd or REPO_ROOT
    ) as process:
        yield url, process
