"""How the service starts: the ``bentoml serve`` command line and environment for a
``ServiceSettings``. ``emotion-ops serve`` execs it; the benchmark and the soak start their
servers with it, so every server runs the way the image runs."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from core.settings import ServiceSettings

SERVICE = "service.service:EmotionService"


def serve_command(settings: ServiceSettings) -> tuple[list[str], dict[str, str]]:
    """The ``bentoml serve`` command line and environment that serve ``settings``.

    - ``--working-dir`` is the folder that holds this installation's ``service`` package (the
      checkout, or site-packages for an installed wheel), so the served code is the installed
      code, whatever the current folder holds.
    - ``BENTOML_HOME`` is per port under ``var_dir``: BentoML empties its Prometheus
      multiprocess folder there at start, so two services sharing one folder blank each
      other's metrics.
    """
    code_root = Path(__file__).resolve().parents[1]
    # This interpreter's BentoML, whatever PATH holds.
    command = [
        sys.executable,
        "-m",
        "bentoml",
        "serve",
        SERVICE,
        "--working-dir",
        str(code_root),
        "--host",
        settings.host,
        "--port",
        str(settings.port),
    ]
    home = settings.var_dir / "bentoml" / f"port-{settings.port}"
    home.mkdir(parents=True, exist_ok=True)
    # The workers run in --working-dir and would not see a .env of the current folder: hand
    # them the settings this process checked (bind address, key), not their own defaults.
    effective = {
        "EMOTION_VAR_DIR": str(settings.var_dir),
        "EMOTION_HOST": settings.host,
        "EMOTION_PORT": str(settings.port),
        # Which registered model: the task may have picked the name (a .env's included).
        "EMOTION_TASK": settings.task,
        "EMOTION_MODEL_NAME": settings.model_name,
    }
    if settings.api_key is not None:
        effective["EMOTION_API_KEY"] = settings.api_key.get_secret_value()
    if settings.api_keys:
        effective["EMOTION_API_KEYS"] = json.dumps(
            {
                name: {"key": named.key.get_secret_value(), "role": named.role.value}
                for name, named in settings.api_keys.items()
            }
        )
    if settings.allow_anonymous is not None:
        effective["EMOTION_ALLOW_ANONYMOUS"] = str(settings.allow_anonymous).lower()
    env = {**os.environ, "BENTOML_HOME": str(home), **effective}
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return command, env
