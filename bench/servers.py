"""The servers a benchmark puts under load, started as the product runs them: our service in a
case's configuration (``emotion-ops serve``'s command, on a free loopback port), and the
seed-style baseline (``bench/baseline_server.py``)."""

from __future__ import annotations

import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from bench.processes import answers, bentoml_ready, free_port, running_process
from core.settings import ServiceSettings
from service.launch import serve_command

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# A temporary alias on the model the champion is compared with, so a service can serve it.
COMPARED_ALIAS = "bench-compared"


@dataclass(frozen=True)
class Case:
    """One server under load: which layout, runtime and precision, monitoring on or off."""

    name: str  # baseline | bentoml | bentoml-no-monitoring | bentoml-no-novelty | bentoml-multilabel
    runtime: str
    precision: str
    monitoring: bool = True
    task: str = "single"  # which registered model the service serves
    novelty: bool = True
    model: str = "champion"  # champion | compared (its teacher or student) | seed-size
    workers: int | None = None  # None: the service's defaults
    threads: int | None = None
    spinning: bool | None = None
    shadow_share: float | None = None  # None: the service's default
    env: tuple[tuple[str, str], ...] = ()  # more of the server's environment (bench path's layers)
    # Another checkout's service (bench path --against) and the interpreter that imports it.
    code_root: str | None = None
    python: str | None = None

    @property
    def variant(self) -> str:
        return f"{self.runtime}-{self.precision}"


def service_cases(runtime: str, precision: str) -> tuple[Case, ...]:
    """Our service on both runtimes and precisions, and with monitoring off on the served
    default (``runtime``, ``precision``)."""
    return (
        Case("bentoml", "torch", "fp32"),
        Case("bentoml", "torch", "int8"),
        Case("bentoml", "onnx", "fp32"),
        Case("bentoml", "onnx", "int8"),
        Case("bentoml-no-monitoring", runtime, precision, monitoring=False),
        Case("bentoml-no-novelty", runtime, precision, novelty=False),
    )


BASELINE = Case("baseline", "torch", "fp32", monitoring=False)


def serve_case(settings: ServiceSettings, work: Path, case: Case, log_url: str | None = None):
    """The service as ``emotion-ops serve`` runs it, on a free port: (context manager, base URL).

    Each server has its own BentoML home (``serve_command``), so none blanks another's metrics,
    and its own prediction log (``log_url``, default a new SQLite file in ``work``)."""
    port = free_port()
    command, serve_env = serve_command(settings.model_copy(update={"port": port, "host": "127.0.0.1"}))
    if case.code_root is not None and case.python is not None:
        command = [case.python, *command[1:]]
        command[command.index("--working-dir") + 1] = case.code_root
    env = {
        **serve_env,
        "EMOTION_HOST": "127.0.0.1",
        "EMOTION_PORT": str(port),
        "EMOTION_ALLOW_ANONYMOUS": "true",  # the load client sends no key
        "EMOTION_RUNTIME": case.runtime,
        "EMOTION_QUANTIZE": str(case.precision == "int8").lower(),
        "EMOTION_MONITORING": str(case.monitoring).lower(),
        "EMOTION_TASK": case.task,
        "EMOTION_NOVELTY": str(case.novelty).lower(),
        "EMOTION_MODEL_NAME": settings.multilabel_model_name
        if case.task == "multilabel"
        else settings.model_name,
        "EMOTION_PREDICTION_LOG_URL": log_url
        or f"sqlite:///{work / f'predictions-{uuid.uuid4().hex[:6]}.db'}",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
    }
    if case.model == "compared":
        env["EMOTION_MODEL_ALIAS"] = COMPARED_ALIAS
    for name, value in (
        ("WORKERS", case.workers),
        ("THREADS", case.threads),
        ("ONNX_SPINNING", case.spinning),
        ("SHADOW_SHARE", case.shadow_share),
    ):
        if value is not None:
            env[f"EMOTION_{name}"] = str(value).lower()
    env.update(case.env)
    env.pop("EMOTION_API_KEY", None)
    url = f"http://127.0.0.1:{port}"
    log = work / f"{case.name}-{case.variant}-{uuid.uuid4().hex[:4]}.log"
    return running_process(command, env, bentoml_ready(url), log, 300, PROJECT_ROOT), url


def serve_baseline(bundle, work: Path, name: str = "baseline"):
    port = free_port()
    command = [sys.executable, "-m", "bench.baseline_server", "--model-dir", str(bundle.model_dir)]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    url = f"http://127.0.0.1:{port}"
    ready = lambda: answers(f"{url}/health")  # noqa: E731
    return running_process(
        [*command, "--port", str(port)], env, ready, work / f"{name}.log", 300, PROJECT_ROOT
    ), url
