"""``emotion-ops bench``: one run, on loopback, of everything the performance targets compare.

1. The compute ceiling: the champion in-process, batched, fp32 and int8 (texts/s), and int8's
   test accuracy against fp32's.
2. The baseline: the same model behind FastAPI + uvicorn, one forward per request
   (``service/fastapi_baseline.py``).
3. Our BentoML service: fp32 and int8 with monitoring on, int8 with the prediction log and
   custom metrics off (monitoring overhead), and int8 with the model as a second BentoML service
   behind BentoML's adaptive batching (what the in-process batcher gained).
4. The drift job on 10k and 100k logged rows (seconds and peak memory of its process).

Load is a closed loop: ``concurrency`` clients, each sending its next request when the last one
is answered, one test-set text per request, a bounded number of requests per case. Results go to
``var/bench/<time>/results.json`` and ``results.md`` (and ``var/bench/latest.md``).
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from emotion_ops.processes import answers, bentoml_ready, free_port, running_process
from emotion_ops.settings import Settings

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class LoadResult:
    case: str
    precision: str
    concurrency: int
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float] = field(repr=False)

    @property
    def throughput(self) -> float:
        return (self.requests - self.errors) / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")

    def row(self) -> dict:
        return {
            "case": self.case,
            "precision": self.precision,
            "concurrency": self.concurrency,
            "requests": self.requests,
            "errors": self.errors,
            "req_per_s": round(self.throughput, 1),
            "texts_per_s": round(self.throughput, 1),  # one text per request
            "p50_ms": round(self.percentile(50), 1),
            "p95_ms": round(self.percentile(95), 1),
            "p99_ms": round(self.percentile(99), 1),
        }


async def _closed_loop(url: str, texts: list[str], concurrency: int, requests: int, headers: dict) -> tuple:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    counter = iter(range(requests))
    timeout = aiohttp.ClientTimeout(total=120)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector, headers=headers) as session:

        async def client() -> None:
            nonlocal errors
            for index in counter:
                started = time.perf_counter()
                try:
                    async with session.post(url, json={"text": texts[index % len(texts)]}) as response:
                        await response.read()
                        ok = response.status == 200
                except aiohttp.ClientError:
                    ok = False
                if ok:
                    latencies.append((time.perf_counter() - started) * 1000)
                else:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        return latencies, errors, time.perf_counter() - started


def load(
    url: str, texts: list[str], concurrency: int, requests: int, case: str, precision: str
) -> LoadResult:
    # A short warm-up first: the first requests pay for lazy imports and allocator growth.
    asyncio.run(_closed_loop(url, texts, concurrency, min(requests, 2 * concurrency), {}))
    latencies, errors, seconds = asyncio.run(_closed_loop(url, texts, concurrency, requests, {}))
    return LoadResult(case, precision, concurrency, requests, errors, seconds, latencies)


def _bento(settings: Settings, work: Path, quantize: bool, monitoring: bool, in_process: bool = True):
    """The service as ``bentoml serve`` on a free port: (context manager, base URL)."""
    port = free_port()
    env = {
        **os.environ,
        "EMOTION_VAR_DIR": str(settings.var_dir),
        "EMOTION_QUANTIZE": str(quantize).lower(),
        "EMOTION_MONITORING": str(monitoring).lower(),
        "EMOTION_MODEL_IN_PROCESS": str(in_process).lower(),
        "EMOTION_PREDICTION_LOG_URL": f"sqlite:///{work / f'predictions-{uuid.uuid4().hex[:6]}.db'}",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
    }
    env.pop("EMOTION_API_KEY", None)  # the load client sends no key
    bentoml = str(Path(sys.executable).with_name("bentoml"))
    url = f"http://127.0.0.1:{port}"
    command = [bentoml, "serve", "service.service:EmotionService", "--host", "127.0.0.1", "--port", str(port)]
    name = f"bentoml-{'int8' if quantize else 'fp32'}-{'on' if monitoring else 'off'}-{in_process}"
    return running_process(command, env, bentoml_ready(url), work / f"{name}.log", 300, PROJECT_ROOT), url


def ceiling(bundle, texts: list[str], test_texts: list[str], test_labels: list[str]) -> dict:
    """In-process batched throughput, fp32 and int8, and int8's accuracy against fp32's."""
    from service.champion import quantize_dynamic_int8

    results = {}
    for precision in ("fp32", "int8"):
        predictor = bundle.predictor(batch_size=64)
        if precision == "int8":
            predictor.model = quantize_dynamic_int8(predictor.model)
        predictor.predict_proba(texts[:64])  # warm-up
        started = time.perf_counter()
        predictor.predict_proba(texts)
        seconds = time.perf_counter() - started
        predicted = predictor.predict_proba(test_texts).argmax(axis=1)
        accuracy = float(
            np.mean([predictor.labels[i] == label for i, label in zip(predicted, test_labels, strict=True)])
        )
        results[precision] = {
            "texts_per_s": round(len(texts) / seconds, 1),
            "test_accuracy": round(accuracy, 4),
        }
    return results


def drift_timing(
    settings: Settings, bundle, texts: list[str], sizes: tuple[int, ...], work: Path
) -> list[dict]:
    """Time the drift job on ``sizes`` logged rows, each run in a fresh process for its peak RSS."""
    from monitoring.prediction_log import PredictionStore

    predictor = bundle.predictor(batch_size=64)
    predictions = predictor.predict(texts)
    results = []
    for size in sizes:
        url = f"sqlite:///{work / f'drift-{size}.db'}"
        store = PredictionStore.from_url(url)
        store.create_schema()
        start = datetime.now(UTC) - timedelta(hours=1)
        rows = []
        for index in range(size):
            prediction = predictions[index % len(predictions)]
            rows.append(
                {
                    "id": str(uuid.uuid4()),
                    "created_at": start + timedelta(milliseconds=index),
                    "model_name": bundle.name,
                    "model_version": bundle.version,
                    "text": texts[index % len(texts)],
                    "emotion": prediction.emotion,
                    "confidence": prediction.confidence,
                    "probabilities": prediction.probabilities,
                    "latency_ms": 10.0,
                    "truncated": prediction.truncated,
                    "tokens": prediction.tokens,
                    "uncertain": False,
                }
            )
            if len(rows) == 10_000:
                store.insert_many(rows)
                rows = []
        store.insert_many(rows)
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "emotion_ops.bench",
                "--drift-child",
                url,
                str(size),
                str(work / "reports"),
            ],
            cwd=PROJECT_ROOT,
            env={**os.environ, "EMOTION_VAR_DIR": str(settings.var_dir)},
            capture_output=True,
            text=True,
            check=True,
        )
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return results


def _drift_child(url: str, size: int, output: str) -> None:
    """Child process: one drift run over the last ``size`` rows; prints seconds and peak RSS."""
    from emotion_ops.registry import connect, load_bundle
    from monitoring.drift import TrafficWindow, analyse
    from monitoring.monitor import drift_policy
    from monitoring.prediction_log import PredictionStore

    settings = Settings()
    bundle = load_bundle(connect(settings), settings)
    reference = bundle.reference()
    started = time.perf_counter()
    result = analyse(
        PredictionStore.from_url(url),
        TrafficWindow(bundle.version, rows=size),
        reference,
        bundle.labels,
        bundle.name,
        drift_policy(settings),
        Path(output),
    )
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "rows": size,
                "analysed_rows": result.analysed_rows,
                "verdict": result.verdict,
                "seconds": round(seconds, 1),
                "peak_rss_mb": round(peak_mb),
            }
        )
    )


def run(
    settings: Settings,
    concurrency: tuple[int, ...] = (1, 8, 32),
    requests: int = 1000,
    ceiling_texts: int = 1024,
    drift_sizes: tuple[int, ...] = (10_000, 100_000),
    output_root: Path | None = None,
    progress=print,
) -> Path:
    """Run every case; returns the folder with results.json and results.md."""
    from emotion_ops.registry import connect, load_bundle
    from training.data import load_emotion_dataset

    bundle = load_bundle(connect(settings), settings)
    test = load_emotion_dataset(settings.resolve_data_source(), splits=("test",)).splits["test"]
    texts = test["text"].tolist()
    output = (output_root or settings.var_dir / "bench") / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    output.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-", dir=output))

    progress("compute ceiling (in-process, batched)")
    pool = (texts * (ceiling_texts // len(texts) + 1))[:ceiling_texts]
    compute = ceiling(bundle, pool, texts, test["label"].tolist())

    loads: list[LoadResult] = []
    progress("baseline: FastAPI + uvicorn, one forward per request")
    port = free_port()
    command = [sys.executable, "-m", "service.fastapi_baseline", "--model-dir", str(bundle.model_dir)]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    ready = lambda: answers(f"http://127.0.0.1:{port}/health")  # noqa: E731
    with running_process(
        [*command, "--port", str(port)], env, ready, work / "baseline.log", 300, PROJECT_ROOT
    ):
        for level in concurrency:
            loads.append(load(f"http://127.0.0.1:{port}/predict", texts, level, requests, "baseline", "fp32"))
            progress(f"  c={level}: {loads[-1].row()}")

    cases = (
        ("bentoml", False, True, True),
        ("bentoml", True, True, True),
        ("bentoml-no-monitoring", True, False, True),
        # Before the in-process batcher: the model as a second BentoML service (adaptive batching).
        ("bentoml-two-process", True, True, False),
    )
    for case, quantize, monitoring, in_process in cases:
        precision = "int8" if quantize else "fp32"
        progress(f"{case} {precision}")
        server, url = _bento(settings, work, quantize, monitoring, in_process)
        with server:
            for level in concurrency:
                loads.append(load(f"{url}/predict", texts, level, requests, case, precision))
                progress(f"  c={level}: {loads[-1].row()}")

    drift = []
    if drift_sizes:
        progress(f"drift job on {', '.join(map(str, drift_sizes))} logged rows")
        drift = drift_timing(settings, bundle, texts, drift_sizes, work)

    results = summarise(bundle, compute, loads, drift, concurrency, requests)
    (output / "results.json").write_text(json.dumps(results, indent=2))
    markdown = to_markdown(results)
    (output / "results.md").write_text(markdown)
    (output.parent / "latest.md").write_text(markdown)
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    return output


def summarise(
    bundle, compute: dict, loads: list[LoadResult], drift: list[dict], concurrency, requests
) -> dict:
    rows = [result.row() for result in loads]
    by_key = {(r["case"], r["precision"], r["concurrency"]): r for r in rows}
    for row in rows:
        baseline = by_key.get(("baseline", "fp32", row["concurrency"]))
        row["vs_baseline"] = round(row["req_per_s"] / baseline["req_per_s"], 2) if baseline else None
        row["vs_ceiling"] = round(row["texts_per_s"] / compute[row["precision"]]["texts_per_s"], 2)
        if row["case"] == "bentoml":
            off = by_key.get(("bentoml-no-monitoring", row["precision"], row["concurrency"]))
            row["monitoring_overhead"] = round(1 - row["req_per_s"] / off["req_per_s"], 3) if off else None
    return {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(),
        },
        "model": {"name": bundle.name, "version": bundle.version, "max_length": bundle.card["max_length"]},
        "requests_per_case": requests,
        "concurrency": list(concurrency),
        "compute_ceiling": compute,
        "load": rows,
        "drift": drift,
    }


def to_markdown(results: dict) -> str:
    machine = results["machine"]
    compute = results["compute_ceiling"]
    lines = [
        f"Measured {results['measured_at']} on {machine['cpus']} CPUs ({machine['processor']}, "
        f"{machine['platform']}), model {results['model']['name']} v{results['model']['version']}, "
        f"{results['requests_per_case']} requests per case, one test-set text per request.",
        "",
        "Compute ceiling (in-process, batches of 64): "
        + ", ".join(
            f"{p} {c['texts_per_s']} texts/s (test accuracy {100 * c['test_accuracy']:.2f} %)"
            for p, c in compute.items()
        ),
        "",
        "| case | precision | clients | req/s | p50 ms | p95 ms | p99 ms | errors | vs baseline | vs ceiling "
        "| monitoring overhead |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results["load"]:
        overhead = r.get("monitoring_overhead")
        lines.append(
            f"| {r['case']} | {r['precision']} | {r['concurrency']} | {r['req_per_s']} | {r['p50_ms']} | "
            f"{r['p95_ms']} | {r['p99_ms']} | {r['errors']} | {r['vs_baseline']}x | {r['vs_ceiling']:.0%} | "
            f"{'' if overhead is None else f'{overhead:.1%}'} |"
        )
    if results["drift"]:
        lines += [
            "",
            "| drift job: logged rows | analysed (sample) | seconds | peak RSS MB |",
            "| ---: | ---: | ---: | ---: |",
        ]
        for d in results["drift"]:
            lines.append(f"| {d['rows']} | {d['analysed_rows']} | {d['seconds']} | {d['peak_rss_mb']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--drift-child":
        _drift_child(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        sys.exit("usage: emotion-ops bench (this module's own entry is for its drift child process)")
