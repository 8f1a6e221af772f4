"""``emotion-ops bench path``: where a request's time goes on its way through BentoML and this
service, one layer switched off (or, where off is the default, on) at a time.

Every case is the champion served as ``emotion-ops serve`` runs it on the default runtime and
precision, with one change:

- ``asyncio-h11``: uvloop and httptools hidden from uvicorn (it then runs asyncio's own loop and
  the pure-Python h11 parser, BentoML's default where they are not installed);
- ``tracing-on``: BentoML's OpenTelemetry middleware making spans on the API routes (its
  default; the service excludes every URL unless ``EMOTION_TRACING`` is set);
- ``access-log-on``: BentoML's per-request access log line (its default; off here by default);
- ``no-request-metrics``: BentoML's request metrics middleware (request counts and latencies;
  BentoML then serves no /metrics at all, so this case's model CPU is unknown);
- ``no-model-metrics``: the service's per-prediction metrics (emotion, confidence, tokens);
- ``no-disconnect-watch``: the guard's per-request watcher that cancels a request whose client
  hung up (the handler then runs inline);
- ``redaction-on``: the prediction log's redaction of e-mails, phone numbers and URLs (opt-in);
- ``no-log``: no prediction log row (sample rate 0; the shadow samples logged rows only);
- ``no-novelty``: no novelty score;
- ``no-monitoring``: neither log nor model metrics nor shadow;
- ``all-off``: all of the above that are on by default, off at once.

Beside them: ``lean`` (the same model behind the in-process batcher and a raw ASGI route on
uvicorn, ``bench/lean_server.py``), ``bare`` (that route with no model: the HTTP floor) and the
in-process ceiling. Each case's CPU per request comes from its process tree over each turn,
and the service's forward passes' CPU from its own /metrics (``bench.load.CpuMeter``): the
difference is what the request path costs.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from bench.ceiling import ceiling
from bench.load import ratio, serve_and_load
from bench.models import model_shape
from bench.processes import answers, free_port, machine_facts, running_process
from bench.servers import PROJECT_ROOT, Case, serve_case
from core.registry import connect, load_bundle
from core.settings import ServiceSettings
from training.data import load_emotion_dataset

# Modules hidden from the servers of the asyncio-h11 case: uvicorn's "auto" then picks asyncio
# and h11, as it does where they are not installed.
HIDDEN_FAST_PATH = ("uvloop", "httptools")
ALL_OFF = {
    "EMOTION_REQUEST_PATH_ABLATION": "request-metrics,model-metrics,disconnect-watch",
    "EMOTION_MONITORING": "false",
    "EMOTION_NOVELTY": "false",
}
# Name -> what changes against the default (environment; "hide" is the asyncio-h11 case).
PATH_CASES: dict[str, dict[str, str]] = {
    "default": {},
    "asyncio-h11": {"hide": ",".join(HIDDEN_FAST_PATH)},
    "tracing-on": {"EMOTION_TRACING": "true"},
    "access-log-on": {"EMOTION_ACCESS_LOG": "true"},
    "no-request-metrics": {"EMOTION_REQUEST_PATH_ABLATION": "request-metrics"},
    "no-model-metrics": {"EMOTION_REQUEST_PATH_ABLATION": "model-metrics"},
    "no-disconnect-watch": {"EMOTION_REQUEST_PATH_ABLATION": "disconnect-watch"},
    "redaction-on": {"EMOTION_LOG_REDACT": "true"},
    "no-log": {"EMOTION_LOG_SAMPLE_RATE": "0"},
    "no-novelty": {"EMOTION_NOVELTY": "false"},
    "no-monitoring": {"EMOTION_MONITORING": "false"},
    "all-off": ALL_OFF,
}
REFERENCES = ("lean", "bare")


def parse_cases(value: str) -> tuple[str, ...]:
    """``--cases``: comma-separated case names (``default`` is always measured, first)."""
    known = (*PATH_CASES, *REFERENCES)
    names = [part.strip() for part in value.split(",") if part.strip()]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"--cases: unknown case(s) {unknown}; choose from {', '.join(known)}")
    return tuple(dict.fromkeys(["default", *names]))


def path_case(name: str, runtime: str, precision: str, hidden_dir: Path) -> Case:
    changes = dict(PATH_CASES.get(name, {}))
    env = {}
    if changes.pop("hide", None):
        env["PYTHONPATH"] = str(hidden_dir)
    env.update(changes)
    # No shadow: its scoring runs after the answers, in whichever turn comes next, and is not
    # the request path ('bench shadow' measures it).
    return Case(name, runtime, precision, env=tuple(sorted(env.items())), shadow_share=0.0)


def hide_modules(folder: Path, names: tuple[str, ...] = HIDDEN_FAST_PATH) -> Path:
    """A folder that, first on PYTHONPATH, makes ``import uvloop`` (and the others) fail."""
    for name in names:
        package = folder / name
        package.mkdir(parents=True, exist_ok=True)
        (package / "__init__.py").write_text(
            f'raise ImportError("{name} hidden by emotion-ops bench path")\n'
        )
    return folder


def interpreter_for(checkout: Path, folder: Path) -> str:
    """A Python that imports ``checkout``'s code with this environment's packages: a bare venv
    whose one .pth names this interpreter's site-packages, so this checkout's editable install
    (a finder that would win over any path) is not loaded there."""
    import site
    import venv

    check_checkout(checkout)
    packages = [Path(path) for path in site.getsitepackages() if path.endswith("site-packages")]
    if not packages:
        raise ValueError("--against needs this Python's site-packages to lend the other checkout; none found")
    try:
        venv.EnvBuilder(with_pip=False).create(folder)
        (site_packages,) = folder.glob("lib/python*/site-packages")
        (site_packages / "emotion-ops-bench.pth").write_text(f"{packages[0]}\n")
    except (OSError, ValueError) as error:
        raise ValueError(f"--against: could not make a Python for {checkout} in {folder}: {error}") from error
    return str(folder / "bin" / "python")


def check_checkout(checkout: Path) -> None:
    """Refuse, before anything is measured, what is not a checkout of this project."""
    if not (checkout / "service" / "service.py").is_file():
        raise ValueError(f"--against: {checkout} is not a checkout of this project (no service/service.py)")


def serve_reference(mode: str, bundle, runtime: str, precision: str, work: Path):
    """``bench/lean_server.py`` in ``mode`` on a free loopback port: (context manager, URL)."""
    port = free_port()
    command = [sys.executable, "-m", "bench.lean_server", "--mode", mode, "--port", str(port)]
    if mode == "lean":
        command += ["--model-dir", str(bundle.model_dir), "--runtime", runtime]
        command += ["--quantize"] if precision == "int8" else []
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    url = f"http://127.0.0.1:{port}"
    log = work / f"{mode}-{uuid.uuid4().hex[:4]}.log"
    ready = lambda: answers(f"{url}/health")  # noqa: E731
    return running_process(command, env, ready, log, 300, PROJECT_ROOT), url


def validation_costs(texts: list[str], labels: list[str], repeats: int = 20_000) -> dict:
    """Microseconds per request of the service's pydantic IO (BentoML's JSON serde with the
    /predict input and output models) against a hand check and ``json.dumps``, in this process:
    a layer that cannot be switched off in a running BentoML service, so it is timed alone."""
    from _bentoml_impl.serde import JSONSerde

    from service.api import EmotionPrediction
    from service.service import EmotionService

    api = EmotionService.apis["predict"]  # type: ignore[attr-defined]
    serde = JSONSerde()
    bodies = [json.dumps({"text": text}).encode() for text in texts[:100]]
    answer = {
        "emotion": labels[0],
        "emotions": [labels[0]],
        "confidence": 0.9,
        "all_emotions": {label: round(1 / len(labels), 4) for label in labels},
        "uncertain": False,
        "truncated": False,
        "tokens": 20,
        "novelty": 12.5,
        "novel": False,
        "request_id": str(uuid.uuid4()),
        "model_name": "emotion-classifier",
        "model_version": "1",
        "model_alias": "champion",
        "base_model": "distilbert",
        "latency_ms": 3.2,
    }

    def per_call(work) -> float:
        started = time.perf_counter()
        for index in range(repeats):
            work(index)
        return round((time.perf_counter() - started) / repeats * 1e6, 2)

    def hand_input(index: int) -> None:
        document = json.loads(bodies[index % len(bodies)])
        if not isinstance(document, dict) or not isinstance(document.get("text"), str):
            raise ValueError("text")

    return {
        "input_pydantic_us": per_call(
            lambda i: serde.deserialize_model(_payload(bodies[i % len(bodies)]), api.input_spec)
        ),
        "input_hand_us": per_call(hand_input),
        "output_pydantic_us": per_call(lambda i: serde.serialize_model(EmotionPrediction(**answer))),
        "output_json_us": per_call(lambda i: json.dumps(answer).encode()),
    }


def _payload(body: bytes):
    from _bentoml_impl.serde import Payload

    return Payload((body,))


def run_path(
    settings: ServiceSettings,
    data_source: str,
    cases: tuple[str, ...] = (*PATH_CASES, *REFERENCES),
    concurrency: tuple[int, ...] = (1, 32),
    requests: int = 600,
    rounds: int = 3,
    ceiling_texts: int = 1024,
    output_root: Path | None = None,
    progress=print,
    against: Path | None = None,
) -> Path:
    """Serve the champion once per case of ``cases`` side by side under the same interleaved
    load; returns the folder with results.json and results.md. ``against`` (another checkout,
    an earlier commit's) adds its service with its defaults, the shadow off, as the case ``before``."""
    if against is not None:
        check_checkout(against.resolve())
    bundle = load_bundle(connect(settings), settings)
    test = load_emotion_dataset(data_source, splits=("test",)).splits["test"]
    texts = test["text"].tolist()
    runtime, precision = settings.runtime, "int8" if settings.quantize else "fp32"
    variant = f"{runtime}-{precision}"
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    output = (output_root or settings.var_dir / "bench") / f"{stamp}-path"
    output.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-", dir=output))
    # Made before anything is measured: a failure here costs seconds, not the ceiling's minutes.
    python = None if against is None else interpreter_for(against.resolve(), work / "before-venv")

    progress(f"in-process ceiling on {variant}")
    pool = (texts * (ceiling_texts // len(texts) + 1))[:ceiling_texts]
    compute = ceiling(bundle, pool, texts, test["label"].tolist(), variants=((runtime, precision),))
    in_process = compute[variant]["texts_per_s"]
    progress(f"  {in_process} texts/s")

    hidden = hide_modules(work / "hidden")
    served = [path_case(name, runtime, precision, hidden) for name in cases if name in PATH_CASES]
    references = [Case(name, runtime, precision, monitoring=False) for name in cases if name in REFERENCES]
    if against is not None:
        root = str(against.resolve())
        served.append(Case("before", runtime, precision, code_root=root, python=python, shadow_share=0.0))

    def start(case: Case):
        if case.name in REFERENCES:
            return serve_reference(case.name, bundle, runtime, precision, work)
        return serve_case(settings, work, case)

    started = time.perf_counter()
    loads, memory = serve_and_load(
        [*served, *references], start, texts, concurrency, requests, rounds, progress
    )
    rows = [
        {
            **result.row(),
            "rss_mb": memory[result.case],
            # bare runs no model: its rate is the HTTP floor's, not a share of the model's ceiling
            "vs_ceiling": None if result.case.name == "bare" else ratio(result.throughput, in_process),
        }
        for result in loads
    ]
    for row in rows:
        default = next(r for r in rows if r["case"] == "default" and r["concurrency"] == row["concurrency"])
        row["vs_default"] = ratio(row["req_per_s"], default["req_per_s"])
        # What switching this layer off (or on) changed in the server's CPU per request.
        row["cpu_ms_vs_default"] = (
            round(row["server_cpu_ms"] - default["server_cpu_ms"], 3)
            if "server_cpu_ms" in row and "server_cpu_ms" in default
            else None
        )
    results = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_facts(),
        "model": {"name": bundle.name, "version": bundle.version, "shape": model_shape(bundle.model_dir)},
        "served": variant,
        "in_process_texts_per_s": in_process,
        "compute_ceiling": compute,
        "requests_per_case": requests,
        "rounds": rounds,
        "load_seconds": round(time.perf_counter() - started, 1),
        "cases": {case.name: dict(case.env) for case in served},
        "against": None if against is None else str(against.resolve()),
        "load": rows,
        "validation_us": validation_costs(texts, list(bundle.labels)),
    }
    (output / "results.json").write_text(json.dumps(results, indent=2))
    markdown = path_markdown(results)
    (output / "results.md").write_text(markdown)
    shutil.rmtree(work, ignore_errors=True)
    return output


def path_markdown(results: dict) -> str:
    machine = results["machine"]
    lines = [
        f"Measured {results['measured_at']} on {machine['cpus']} CPUs ({machine['processor']}), model "
        f"{results['model']['name']} v{results['model']['version']} ({results['model']['shape']}) on "
        f"{results['served']}, {results['requests_per_case']} requests per case and client count in "
        f"{results['rounds']} interleaved rounds; in-process ceiling {results['in_process_texts_per_s']} "
        "texts/s. CPU is ms per answered request: the server's processes together, its forward "
        "passes' (the service's own /metrics), the rest (the request path), and the load client's.",
        "",
        "| case | clients | req/s | vs default | vs ceiling | p50 ms | p99 ms | server CPU ms "
        "| model CPU ms | outside model ms | vs default CPU ms | client CPU ms | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]

    def cell(value, suffix: str = "") -> str:
        return "" if value is None else f"{value}{suffix}"

    for r in sorted(results["load"], key=lambda r: r["concurrency"]):
        share = "" if r["vs_ceiling"] is None else format(r["vs_ceiling"], ".0%")
        lines.append(
            f"| {r['case']} | {r['concurrency']} | {r['req_per_s']} | {r['vs_default']}x | "
            f"{share} | {r['p50_ms']} | {r['p99_ms']} | {cell(r.get('server_cpu_ms'))} | "
            f"{cell(r.get('model_cpu_ms'))} | {cell(r.get('outside_model_cpu_ms'))} | "
            f"{'' if r['cpu_ms_vs_default'] is None else format(r['cpu_ms_vs_default'], '+.3f')} | "
            f"{cell(r.get('client_cpu_ms'))} | {r['errors']} |"
        )
    costs = results.get("validation_us")
    if costs:
        lines += [
            "",
            "Validation, timed in-process (not switchable in a running BentoML service), microseconds "
            "per request:",
            "",
            "| step | pydantic (BentoML's JSON serde) | by hand | difference |",
            "| --- | ---: | ---: | ---: |",
            f"| parse /predict's body | {costs['input_pydantic_us']} | {costs['input_hand_us']} | "
            f"{costs['input_pydantic_us'] - costs['input_hand_us']:+.2f} |",
            f"| serialise its answer | {costs['output_pydantic_us']} | {costs['output_json_us']} | "
            f"{costs['output_pydantic_us'] - costs['output_json_us']:+.2f} |",
        ]
    return "\n".join(lines) + "\n"
